//! The wire envelope of a [`BusMessage`] between nodes.
//!
//! A small versioned binary format (all integers are LEB128 varints,
//! `time_ms` zigzag-encoded; strings and byte strings are length-prefixed):
//!
//! ```text
//! u8 version (= 1)
//! u8 kind    (1 publication, 2 join, 3 leave)
//! str channel
//! publication: varint offset, zigzag time_ms, u8 flags (bit 0: has info),
//!              [info], varint tag count, (str key, str value)*,
//!              data = every remaining byte (no length prefix)
//! join/leave:  info
//! info:        str user, str client, bytes conn_info, bytes chan_info
//! ```
//!
//! Decoding slices the received buffer: `data`, `conn_info` and `chan_info`
//! share the NATS payload's memory, no copy.

use std::{collections::BTreeMap, sync::Arc};

use bytes::{BufMut, Bytes, BytesMut};
use switchboard_core::{Publication, PublisherInfo};

use crate::BusMessage;

/// Current envelope version.
pub(crate) const VERSION: u8 = 1;
const KIND_PUBLICATION: u8 = 1;
const KIND_JOIN: u8 = 2;
const KIND_LEAVE: u8 = 3;
const FLAG_INFO: u8 = 1;

/// Encodes a message into one buffer.
pub(crate) fn encode(msg: &BusMessage) -> Bytes {
    let mut buf = BytesMut::with_capacity(estimate(msg));
    buf.put_u8(VERSION);
    match msg {
        BusMessage::Publication {
            channel,
            publication,
        } => {
            buf.put_u8(KIND_PUBLICATION);
            put_bytes(&mut buf, channel.as_bytes());
            put_varint(&mut buf, publication.offset);
            put_varint(&mut buf, zigzag(publication.time_ms));
            match &publication.info {
                Some(info) => {
                    buf.put_u8(FLAG_INFO);
                    put_info(&mut buf, info);
                }
                None => buf.put_u8(0),
            }
            put_varint(&mut buf, publication.tags.len() as u64);
            for (k, v) in &publication.tags {
                put_bytes(&mut buf, k.as_bytes());
                put_bytes(&mut buf, v.as_bytes());
            }
            buf.put_slice(&publication.data);
        }
        BusMessage::Join { channel, info } | BusMessage::Leave { channel, info } => {
            buf.put_u8(if matches!(msg, BusMessage::Join { .. }) {
                KIND_JOIN
            } else {
                KIND_LEAVE
            });
            put_bytes(&mut buf, channel.as_bytes());
            put_info(&mut buf, info);
        }
    }
    buf.freeze()
}

/// Why a received envelope was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("unsupported envelope version {0}")]
    Version(u8),
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("truncated envelope")]
    Truncated,
    #[error("invalid UTF-8 in {0}")]
    Utf8(&'static str),
}

/// Decodes an envelope produced by [`encode`].
pub(crate) fn decode(payload: Bytes) -> Result<BusMessage, DecodeError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let kind = r.u8()?;
    let channel: Arc<str> = r.string("channel")?.into();
    match kind {
        KIND_PUBLICATION => {
            let offset = r.varint()?;
            let time_ms = unzigzag(r.varint()?);
            let flags = r.u8()?;
            let info = if flags & FLAG_INFO != 0 {
                Some(r.info()?)
            } else {
                None
            };
            let count = r.varint()?;
            let mut tags = BTreeMap::new();
            for _ in 0..count {
                let k = r.string("tag key")?;
                let v = r.string("tag value")?;
                tags.insert(k, v);
            }
            let data = r.rest();
            Ok(BusMessage::Publication {
                channel,
                publication: Arc::new(Publication {
                    offset,
                    data,
                    info,
                    tags,
                    time_ms,
                }),
            })
        }
        KIND_JOIN => Ok(BusMessage::Join {
            channel,
            info: r.info()?,
        }),
        KIND_LEAVE => Ok(BusMessage::Leave {
            channel,
            info: r.info()?,
        }),
        other => Err(DecodeError::Kind(other)),
    }
}

fn estimate(msg: &BusMessage) -> usize {
    let info_len = |i: &PublisherInfo| {
        i.user.len() + i.client.len() + i.conn_info.len() + i.chan_info.len() + 20
    };
    let body = match msg {
        BusMessage::Publication { publication, .. } => {
            publication.data.len()
                + publication.info.as_ref().map_or(0, info_len)
                + publication
                    .tags
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>()
                + 24
        }
        BusMessage::Join { info, .. } | BusMessage::Leave { info, .. } => info_len(info),
    };
    body + msg.channel().len() + 8
}

fn put_info(buf: &mut BytesMut, info: &PublisherInfo) {
    put_bytes(buf, info.user.as_bytes());
    put_bytes(buf, info.client.as_bytes());
    put_bytes(buf, &info.conn_info);
    put_bytes(buf, &info.chan_info);
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    put_varint(buf, bytes.len() as u64);
    buf.put_slice(bytes);
}

fn put_varint(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(DecodeError::Truncated)?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let bytes = self.bytes()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8(what))
    }

    fn info(&mut self) -> Result<PublisherInfo, DecodeError> {
        Ok(PublisherInfo {
            user: self.string("user")?,
            client: self.string("client")?,
            conn_info: self.bytes()?,
            chan_info: self.bytes()?,
        })
    }

    fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> PublisherInfo {
        PublisherInfo {
            user: "u1".into(),
            client: "c-ü".into(),
            conn_info: Bytes::from_static(br#"{"name":"ann"}"#),
            chan_info: Bytes::new(),
        }
    }

    fn roundtrip(msg: BusMessage) -> BusMessage {
        decode(encode(&msg)).expect("decode")
    }

    #[test]
    fn publication_roundtrips() {
        for (pub_info, time_ms) in [(None, 0), (Some(info()), 1_700_000_000_123), (None, -5)] {
            let publication = Publication {
                offset: 300_000,
                data: Bytes::from_static(b"{\"text\":\"hi\"}"),
                info: pub_info,
                tags: BTreeMap::from([("a".into(), "1".into()), ("k".into(), String::new())]),
                time_ms,
            };
            let msg = BusMessage::Publication {
                channel: "chat:lobby.*>".into(),
                publication: Arc::new(publication.clone()),
            };
            match roundtrip(msg) {
                BusMessage::Publication {
                    channel,
                    publication: got,
                } => {
                    assert_eq!(&*channel, "chat:lobby.*>");
                    assert_eq!(*got, publication);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn join_and_leave_roundtrip() {
        let join = roundtrip(BusMessage::Join {
            channel: "".into(),
            info: info(),
        });
        assert!(
            matches!(join, BusMessage::Join { ref channel, info: ref i } if channel.is_empty() && *i == info())
        );
        let leave = roundtrip(BusMessage::Leave {
            channel: "x".into(),
            info: PublisherInfo::default(),
        });
        assert!(
            matches!(leave, BusMessage::Leave { ref channel, ref info } if &**channel == "x" && *info == PublisherInfo::default())
        );
    }

    #[test]
    fn garbage_is_rejected_not_panicking() {
        assert_eq!(decode(Bytes::new()).unwrap_err(), DecodeError::Truncated);
        assert_eq!(
            decode(Bytes::from_static(&[9, 1])).unwrap_err(),
            DecodeError::Version(9)
        );
        assert_eq!(
            decode(Bytes::from_static(&[1, 7, 0])).unwrap_err(),
            DecodeError::Kind(7)
        );
        assert_eq!(
            decode(Bytes::from_static(&[1, 1, 200])).unwrap_err(),
            DecodeError::Truncated
        );
        let full = encode(&BusMessage::Join {
            channel: "chan".into(),
            info: info(),
        });
        for cut in 0..full.len() {
            assert!(decode(full.slice(..cut)).is_err(), "cut at {cut}");
        }
        for v in [0, 1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }
}
