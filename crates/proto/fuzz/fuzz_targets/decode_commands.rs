//! Fuzzes client frame decoding for both encodings: decoding must never panic,
//! and whatever decodes must re-encode and decode again to the same commands.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_proto::codec::{Encoding, decode_commands, encode_command, join_frame};

fuzz_target!(|data: &[u8]| {
    for enc in [Encoding::Json, Encoding::Protobuf] {
        if let Ok(commands) = decode_commands(enc, data, 128) {
            // Re-encode in both encodings; the result must decode back.
            for out in [Encoding::Json, Encoding::Protobuf] {
                let parts: Vec<_> = commands.iter().map(|c| encode_command(out, c)).collect();
                let frame = join_frame(out, &parts);
                let again = decode_commands(out, &frame, 128).expect("re-encoded frame decodes");
                assert_eq!(again.len(), commands.len());
                if out == Encoding::Protobuf {
                    assert_eq!(again, commands);
                }
            }
        }
    }
});
