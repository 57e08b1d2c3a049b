//! The server side of the WebSocket wire format (RFC 6455), sans-IO: the
//! handshake's accept key, frame header parsing and encoding, unmasking.
//!
//! The gateway speaks WebSocket itself (instead of through a general-purpose
//! library) so that an idle connection holds no read or write buffer: reads
//! land in a buffer on the stack and only a partial frame is kept on the
//! heap, and writes go out as vectored writes of a header and the queued
//! frames' own bytes.

use base64::Engine as _;
use sha1::{Digest, Sha1};
use switchboard_proto::codes::Disconnect;

/// Frame opcodes (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Continuation,
            1 => Self::Text,
            2 => Self::Binary,
            8 => Self::Close,
            9 => Self::Ping,
            10 => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0,
            Self::Text => 1,
            Self::Binary => 2,
            Self::Close => 8,
            Self::Ping => 9,
            Self::Pong => 10,
        }
    }

    /// Close, ping and pong.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed client frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Last frame of a message.
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    /// Payload length.
    pub len: usize,
    /// Bytes the header itself takes.
    pub header_len: usize,
}

impl Header {
    /// Header plus payload.
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.len
    }
}

/// Why a client frame is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// Not valid WebSocket from a client (reserved bits, unknown opcode,
    /// unmasked frame, fragmented or long control frame).
    Protocol(&'static str),
    /// The payload is larger than the limit.
    TooLarge,
}

/// Longest possible header: 2 + 8 (length) + 4 (mask).
pub(crate) const MAX_HEADER: usize = 14;

/// Parses the header of a client frame at the start of `buf`: `Ok(None)`
/// when more bytes are needed. Payloads over `max_payload` are refused.
pub(crate) fn parse_header(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(FrameError::Protocol("unknown opcode"))?;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Protocol("unmasked client frame"));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let len = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(FrameError::Protocol("length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(FrameError::Protocol("fragmented or long control frame"));
    }
    let len = usize::try_from(len).map_err(|_| FrameError::TooLarge)?;
    if len > max_payload {
        return Err(FrameError::TooLarge);
    }
    let Some(m) = buf.get(at..at + 4) else {
        return Ok(None);
    };
    let mask = [m[0], m[1], m[2], m[3]];
    at += 4;
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        len,
        header_len: at,
    }))
}

/// Unmasks (or masks) `data` in place.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// Writes the header of an unmasked, final server frame into `out`;
/// returns its length.
pub(crate) fn encode_header(opcode: OpCode, len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x80 | opcode.bits();
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(l) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&l.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A whole server frame (header and payload) in one buffer: for close and
/// pong frames.
pub(crate) fn encode_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; 10];
    let n = encode_header(opcode, payload.len(), &mut head);
    let mut v = Vec::with_capacity(n + payload.len());
    v.extend_from_slice(&head[..n]);
    v.extend_from_slice(payload);
    v
}

/// The payload of a close frame for `d`: its code and its reason, which
/// [`Disconnect::close_reason`] already cuts to fit.
pub(crate) fn close_payload(d: &Disconnect) -> Vec<u8> {
    let reason = d.close_reason().as_bytes();
    let mut v = Vec::with_capacity(2 + reason.len());
    v.extend_from_slice(&d.close_code().to_be_bytes());
    v.extend_from_slice(reason);
    v
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub(crate) fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut v = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 0xffff => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        apply_mask(&mut p, mask);
        v.extend_from_slice(&p);
        v
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn parses_masked_frames_of_every_length_form() {
        for n in [0, 5, 125, 126, 300, 65535, 65536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let f = masked(2, true, &payload, [1, 2, 3, 4]);
            // Every strict prefix of the header asks for more.
            let h = parse_header(&f, 1 << 20).unwrap().unwrap();
            for cut in 0..h.header_len {
                assert_eq!(
                    parse_header(&f[..cut], 1 << 20),
                    Ok(None),
                    "n={n} cut={cut}"
                );
            }
            assert_eq!(h.len, n);
            assert_eq!(h.opcode, OpCode::Binary);
            assert!(h.fin);
            assert_eq!(h.frame_len(), f.len());
            let mut body = f[h.header_len..].to_vec();
            apply_mask(&mut body, h.mask);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn refuses_what_a_client_may_not_send() {
        let ok = masked(1, true, b"hi", [9, 9, 9, 9]);
        let mut rsv = ok.clone();
        rsv[0] |= 0x40;
        assert!(matches!(
            parse_header(&rsv, 100),
            Err(FrameError::Protocol(_))
        ));
        let mut unmasked = ok.clone();
        unmasked[1] &= 0x7f;
        assert!(matches!(
            parse_header(&unmasked, 100),
            Err(FrameError::Protocol(_))
        ));
        let bad_op = masked(3, true, b"", [0; 4]);
        assert!(matches!(
            parse_header(&bad_op, 100),
            Err(FrameError::Protocol(_))
        ));
        let frag_ping = masked(9, false, b"", [0; 4]);
        assert!(matches!(
            parse_header(&frag_ping, 100),
            Err(FrameError::Protocol(_))
        ));
        let long_ping = masked(9, true, &[0; 126], [0; 4]);
        assert!(matches!(
            parse_header(&long_ping, 1000),
            Err(FrameError::Protocol(_))
        ));
        // Too large is known from the header alone.
        let big = masked(2, true, &[0; 2000], [0; 4]);
        assert_eq!(parse_header(&big[..4], 1999), Err(FrameError::TooLarge));
        assert!(parse_header(&big, 2000).unwrap().is_some());
    }

    #[test]
    fn encodes_server_headers() {
        let mut h = [0u8; 10];
        assert_eq!(encode_header(OpCode::Text, 5, &mut h), 2);
        assert_eq!(h[..2], [0x81, 5]);
        assert_eq!(encode_header(OpCode::Binary, 300, &mut h), 4);
        assert_eq!(h[..4], [0x82, 126, 1, 44]);
        assert_eq!(encode_header(OpCode::Binary, 70_000, &mut h), 10);
        assert_eq!(h[..2], [0x82, 127]);
        assert_eq!(u64::from_be_bytes(h[2..10].try_into().unwrap()), 70_000);
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let p = close_payload(&Disconnect::new(3501, long));
        assert!(p.len() <= 125);
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), 3501);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
    }

    #[test]
    fn mask_round_trips_any_length() {
        for n in 0..20 {
            let orig: Vec<u8> = (0..n).map(|i| (i * 7) as u8).collect();
            let mut d = orig.clone();
            apply_mask(&mut d, [0xde, 0xad, 0xbe, 0xef]);
            if n > 0 {
                assert_ne!(d, orig);
            }
            apply_mask(&mut d, [0xde, 0xad, 0xbe, 0xef]);
            assert_eq!(d, orig);
        }
    }
}
