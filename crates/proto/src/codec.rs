//! Frame-level codecs for the client protocol.
//!
//! * JSON framing (text WebSocket frames): one or more messages per frame,
//!   separated by `'\n'`.
//! * Protobuf framing (binary WebSocket frames): one or more messages per frame,
//!   each prefixed with its length as a protobuf varint.
//!
//! Server side: [`decode_commands`] and [`encode_reply`] + [`join_frame`].
//! Client side: [`encode_command`] and [`decode_replies`].
//!
//! The server's ping is an empty [`Reply`] (`{}` in JSON, the single byte
//! `0x00` in protobuf) and the client's pong an empty [`Command`] (same bytes).
//!
//! Encoding is done once per message and encoding: [`encode_reply`] returns
//! shareable [`Bytes`] that are valid as a frame on their own and can also be
//! concatenated with others through [`join_frame`] / [`append_to_frame`].

use bytes::{Buf, Bytes};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::{Command, Reply};

/// Wire encoding of a client connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// JSON text frames (the default).
    #[default]
    Json,
    /// Protobuf binary frames.
    Protobuf,
}

impl Encoding {
    /// True for the binary (protobuf) encoding.
    pub fn is_binary(self) -> bool {
        self == Encoding::Protobuf
    }

    /// `json` or `protobuf`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Protobuf => "protobuf",
        }
    }

    /// Parses a `format` query parameter value (`json` or `protobuf`).
    pub fn from_format(format: &str) -> Option<Encoding> {
        match format {
            "json" => Some(Encoding::Json),
            "protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// Parses a WebSocket subprotocol (`centrifuge-json` or `centrifuge-protobuf`).
    pub fn from_ws_subprotocol(protocol: &str) -> Option<Encoding> {
        match protocol {
            "centrifuge-json" => Some(Encoding::Json),
            "centrifuge-protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }
}

/// Why a frame could not be decoded. Decoding never panics; every malformed
/// input yields one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A JSON message in the frame is malformed.
    #[error("malformed JSON message: {0}")]
    Json(String),
    /// A protobuf message (or its length prefix) in the frame is malformed.
    #[error("malformed protobuf message: {0}")]
    Protobuf(String),
    /// The frame holds more messages than allowed.
    #[error("too many messages in one frame (limit is {limit})")]
    TooManyCommands {
        /// The configured limit.
        limit: usize,
    },
    /// The frame holds no message at all.
    #[error("empty frame")]
    Empty,
}

/// Decodes the commands of one client frame, rejecting frames with more than
/// `max_commands` commands.
///
/// JSON: commands separated by `'\n'`; blank lines and a trailing newline are
/// ignored. Protobuf: varint-length-prefixed commands; a zero length is an empty
/// command (a pong). A frame without any command is [`DecodeError::Empty`].
pub fn decode_commands(
    enc: Encoding,
    frame: &[u8],
    max_commands: usize,
) -> Result<Vec<Command>, DecodeError> {
    match enc {
        Encoding::Json => decode_json(frame, max_commands),
        Encoding::Protobuf => decode_protobuf(frame, max_commands),
    }
}

/// Like [`decode_commands`], but takes the frame as [`Bytes`] so that protobuf
/// `bytes` fields (publication data, …) share the frame's memory instead of
/// being copied.
pub fn decode_commands_bytes(
    enc: Encoding,
    frame: Bytes,
    max_commands: usize,
) -> Result<Vec<Command>, DecodeError> {
    match enc {
        Encoding::Json => decode_json(&frame, max_commands),
        Encoding::Protobuf => decode_protobuf(frame, max_commands),
    }
}

/// Decodes the replies of one server frame (client side; no count limit).
pub fn decode_replies(enc: Encoding, frame: &[u8]) -> Result<Vec<Reply>, DecodeError> {
    match enc {
        Encoding::Json => decode_json(frame, usize::MAX),
        Encoding::Protobuf => decode_protobuf(frame, usize::MAX),
    }
}

/// Encodes one reply, ready to be sent as a frame on its own or joined with
/// others by [`join_frame`]: protobuf gives varint length + message, JSON gives
/// the JSON text without a trailing newline.
pub fn encode_reply(enc: Encoding, reply: &Reply) -> Bytes {
    encode_message(enc, reply)
}

/// Encodes one command (client side), in the same shape as [`encode_reply`].
pub fn encode_command(enc: Encoding, command: &Command) -> Bytes {
    encode_message(enc, command)
}

/// The server ping frame: `{}` in JSON, `[0x00]` in protobuf.
pub fn ping_frame(enc: Encoding) -> Bytes {
    match enc {
        Encoding::Json => Bytes::from_static(b"{}"),
        Encoding::Protobuf => Bytes::from_static(&[0]),
    }
}

/// The client pong frame: `{}` in JSON, `[0x00]` in protobuf.
pub fn pong_frame(enc: Encoding) -> Bytes {
    ping_frame(enc)
}

/// Joins encoded messages (from [`encode_reply`] / [`encode_command`]) into one
/// frame: separated by `'\n'` in JSON, concatenated in protobuf. Allocates once.
pub fn join_frame(enc: Encoding, parts: &[Bytes]) -> Vec<u8> {
    let sep = usize::from(enc == Encoding::Json);
    let len = parts.iter().map(Bytes::len).sum::<usize>() + sep * parts.len().saturating_sub(1);
    let mut frame = Vec::with_capacity(len);
    for part in parts {
        append_to_frame(enc, &mut frame, part);
    }
    frame
}

/// Appends one encoded message to a frame being built (adds the `'\n'`
/// separator in JSON when the frame is not empty). Lets a writer batch queued
/// messages into a reusable buffer.
pub fn append_to_frame(enc: Encoding, frame: &mut Vec<u8>, part: &[u8]) {
    if enc == Encoding::Json && !frame.is_empty() {
        frame.push(b'\n');
    }
    frame.extend_from_slice(part);
}

fn encode_message<T: prost::Message + Serialize>(enc: Encoding, msg: &T) -> Bytes {
    match enc {
        Encoding::Protobuf => {
            let len = msg.encoded_len();
            let mut buf = Vec::with_capacity(prost::length_delimiter_len(len) + len);
            prost::encoding::encode_varint(len as u64, &mut buf);
            msg.encode_raw(&mut buf);
            Bytes::from(buf)
        }
        Encoding::Json => {
            let mut buf = Vec::with_capacity(128);
            match serde_json::to_writer(&mut buf, msg) {
                Ok(()) => Bytes::from(buf),
                // Unreachable for the protocol types (string map keys, payloads
                // validated by raw_json); an empty message is the harmless
                // fallback (a ping or a pong).
                Err(_) => Bytes::from_static(b"{}"),
            }
        }
    }
}

fn decode_json<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<Vec<T>, DecodeError> {
    let mut out = Vec::new();
    for line in frame.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if out.len() >= max {
            return Err(DecodeError::TooManyCommands { limit: max });
        }
        if !starts_with_object(line) {
            return Err(DecodeError::Json(format!(
                "message #{}: expected a JSON object",
                out.len() + 1
            )));
        }
        let msg = serde_json::from_slice(line)
            .map_err(|e| DecodeError::Json(format!("message #{}: {e}", out.len() + 1)))?;
        out.push(msg);
    }
    if out.is_empty() {
        return Err(DecodeError::Empty);
    }
    Ok(out)
}

/// True when the first non-whitespace byte opens a JSON object (serde would
/// otherwise also accept a JSON array for a struct).
pub(crate) fn starts_with_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn decode_protobuf<T: prost::Message + Default, B: Buf>(
    mut buf: B,
    max: usize,
) -> Result<Vec<T>, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Empty);
    }
    let mut out = Vec::new();
    while buf.has_remaining() {
        if out.len() >= max {
            return Err(DecodeError::TooManyCommands { limit: max });
        }
        let n = out.len() + 1;
        let len = prost::encoding::decode_varint(&mut buf)
            .map_err(|e| DecodeError::Protobuf(format!("message #{n}: bad length prefix: {e}")))?;
        let remaining = buf.remaining();
        let len = match usize::try_from(len) {
            Ok(len) if len <= remaining => len,
            _ => {
                return Err(DecodeError::Protobuf(format!(
                    "message #{n}: length {len} exceeds the {remaining} remaining bytes"
                )));
            }
        };
        let mut body = (&mut buf).take(len);
        let msg = T::decode(&mut body)
            .map_err(|e| DecodeError::Protobuf(format!("message #{n}: {e}")))?;
        let left = body.remaining();
        body.advance(left);
        out.push(msg);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::*;

    #[test]
    fn ping_pong_round_trip() {
        for enc in [Encoding::Json, Encoding::Protobuf] {
            let ping = encode_reply(enc, &Reply::ping());
            assert_eq!(ping, ping_frame(enc));
            let replies = decode_replies(enc, &ping).unwrap();
            assert_eq!(replies, vec![Reply::default()]);
            assert!(replies[0].is_ping());

            let pong = encode_command(enc, &Command::pong());
            assert_eq!(pong, pong_frame(enc));
            let cmds = decode_commands(enc, &pong, 10).unwrap();
            assert_eq!(cmds, vec![Command::default()]);
            assert!(cmds[0].is_pong());
            assert_eq!(cmds[0].method_name(), "pong");
        }
        assert_eq!(&ping_frame(Encoding::Json)[..], b"{}");
        assert_eq!(&ping_frame(Encoding::Protobuf)[..], &[0u8]);
    }

    fn sample_commands() -> Vec<Command> {
        vec![
            Command::new(
                1,
                Request::Connect(ConnectRequest {
                    token: "t".into(),
                    name: "js".into(),
                    ..Default::default()
                }),
            ),
            Command::new(
                2,
                Request::Subscribe(SubscribeRequest {
                    channel: "chat".into(),
                    recover: true,
                    epoch: "ab".into(),
                    offset: 5,
                    ..Default::default()
                }),
            ),
            Command::pong(),
            Command::new(
                3,
                Request::Publish(PublishRequest {
                    channel: "chat".into(),
                    data: Bytes::from_static(br#"{"text":"hi"}"#),
                }),
            ),
        ]
    }

    #[test]
    fn multi_command_frames_round_trip() {
        for enc in [Encoding::Json, Encoding::Protobuf] {
            let cmds = sample_commands();
            let parts: Vec<Bytes> = cmds.iter().map(|c| encode_command(enc, c)).collect();
            let frame = join_frame(enc, &parts);
            assert_eq!(decode_commands(enc, &frame, 10).unwrap(), cmds);
            assert_eq!(
                decode_commands_bytes(enc, Bytes::from(frame.clone()), 10).unwrap(),
                cmds
            );
            assert_eq!(
                decode_commands(enc, &frame, 3),
                Err(DecodeError::TooManyCommands { limit: 3 })
            );
        }
    }

    #[test]
    fn json_frame_tolerates_blank_lines_and_trailing_newline() {
        let frame = b"{\"id\":1,\"ping\":{}}\n\n{\"id\":2,\"presence\":{\"channel\":\"c\"}}\r\n";
        let cmds = decode_commands(Encoding::Json, frame, 10).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(cmds[0].method_name(), "ping");
        assert_eq!(cmds[1].method_name(), "presence");
        let joined = join_frame(
            Encoding::Json,
            &[Bytes::from_static(b"{}"), Bytes::from_static(b"{\"id\":1}")],
        );
        assert_eq!(joined, b"{}\n{\"id\":1}");
    }

    #[test]
    fn empty_frames_are_errors() {
        for enc in [Encoding::Json, Encoding::Protobuf] {
            assert_eq!(decode_commands(enc, b"", 10), Err(DecodeError::Empty));
        }
        assert_eq!(
            decode_commands(Encoding::Json, b"\n \n", 10),
            Err(DecodeError::Empty)
        );
    }

    #[test]
    fn malformed_frames_are_errors() {
        let e = decode_commands(Encoding::Json, b"{\"id\":1}\n{nope", 10).unwrap_err();
        assert!(
            matches!(e, DecodeError::Json(ref m) if m.contains("#2")),
            "{e}"
        );
        assert!(decode_commands(Encoding::Json, b"[1,2]", 10).is_err());
        assert!(decode_commands(Encoding::Json, b"null", 10).is_err());
        assert!(decode_commands(Encoding::Json, b"[]", 10).is_err());
        assert!(decode_commands(Encoding::Json, b"{\"id\":-1}", 10).is_err());
        // Length prefix larger than the frame.
        let e = decode_commands(Encoding::Protobuf, &[5, 8, 1], 10).unwrap_err();
        assert!(matches!(e, DecodeError::Protobuf(_)), "{e}");
        // Truncated varint.
        assert!(decode_commands(Encoding::Protobuf, &[0x80], 10).is_err());
        // Huge varint.
        assert!(decode_commands(Encoding::Protobuf, &[0xff; 10], 10).is_err());
        // Invalid wire type inside the message.
        assert!(decode_commands(Encoding::Protobuf, &[1, 0x0f], 10).is_err());
        assert_eq!(
            DecodeError::TooManyCommands { limit: 4 }.to_string(),
            "too many messages in one frame (limit is 4)"
        );
    }

    /// Deterministic xorshift64* so the garbage test is reproducible.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        let valid_pb = join_frame(
            Encoding::Protobuf,
            &sample_commands()
                .iter()
                .map(|c| encode_command(Encoding::Protobuf, c))
                .collect::<Vec<_>>(),
        );
        let valid_json = join_frame(
            Encoding::Json,
            &sample_commands()
                .iter()
                .map(|c| encode_command(Encoding::Json, c))
                .collect::<Vec<_>>(),
        );
        for i in 0..20_000 {
            let len = (rng.next() % 64) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if i % 2 == 0 {
                // Mutate valid frames too, to reach deeper decoder paths.
                let base = if i % 4 == 0 { &valid_pb } else { &valid_json };
                buf = base.clone();
                for _ in 0..1 + rng.next() % 4 {
                    let at = (rng.next() as usize) % buf.len();
                    buf[at] = rng.next() as u8;
                }
            }
            for enc in [Encoding::Json, Encoding::Protobuf] {
                let _ = decode_commands(enc, &buf, 100);
                let _ = decode_replies(enc, &buf);
                // Anything that decodes must re-encode to valid output.
                if let Ok(cmds) = decode_commands(enc, &buf, 100) {
                    for c in &cmds {
                        let json = encode_command(Encoding::Json, c);
                        assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
                    }
                    let parts: Vec<Bytes> = cmds
                        .iter()
                        .map(|c| encode_command(Encoding::Protobuf, c))
                        .collect();
                    let frame = join_frame(Encoding::Protobuf, &parts);
                    assert_eq!(
                        decode_commands(Encoding::Protobuf, &frame, 100).unwrap(),
                        cmds
                    );
                }
            }
        }
    }
}
