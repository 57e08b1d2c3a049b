//! Serde helper for payload fields (`data`, `conn_info`, `chan_info`, `info`)
//! that are `bytes` in protobuf but embedded raw JSON in JSON framing.
//!
//! Use it as `#[serde(with = "switchboard_proto::raw_json")]` on a
//! [`bytes::Bytes`] field.
//!
//! * Serializing: bytes that hold a valid JSON document are written verbatim
//!   (`"data":{"text":"hi"}`). Bytes that are not valid JSON (for example a
//!   binary payload published by a protobuf client) are written as a JSON string
//!   holding their standard base64 encoding, so the output is always valid JSON.
//! * Deserializing: any JSON value is accepted and its raw text becomes the bytes
//!   (`{"a":1}` → the 7 bytes `{"a":1}`; `"hi"` → the 4 bytes `"hi"`).
//!
//! Only works with `serde_json` (it relies on [`serde_json::value::RawValue`]).

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Serializes `bytes` as embedded raw JSON, or as a base64 JSON string when the
/// bytes are not a valid JSON document.
///
/// Line breaks between tokens are written as spaces: JSON framing separates
/// messages with `'\n'` (and SSE events end at line breaks), so a message
/// must be one line. Valid JSON has no raw line breaks inside strings, so this
/// never changes the value.
pub fn serialize<S: Serializer>(bytes: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
    match as_raw(bytes) {
        Some(raw) if raw.get().contains(['\n', '\r']) => {
            let flat = raw.get().replace(['\n', '\r'], " ");
            match serde_json::from_str::<&RawValue>(&flat) {
                Ok(flat) => flat.serialize(serializer),
                Err(_) => raw.serialize(serializer),
            }
        }
        Some(raw) => raw.serialize(serializer),
        None => serializer.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// Deserializes any JSON value into the bytes of its raw JSON text.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    let raw: Box<RawValue> = Deserialize::deserialize(deserializer)?;
    let text: Box<str> = raw.into();
    Ok(Bytes::from(String::from(text).into_bytes()))
}

/// Returns the bytes as a borrowed [`RawValue`] when they hold exactly one
/// valid JSON value (surrounding whitespace allowed), `None` otherwise.
pub fn as_raw(bytes: &[u8]) -> Option<&RawValue> {
    serde_json::from_slice::<&RawValue>(bytes).ok()
}

/// True when the bytes hold exactly one valid JSON value.
pub fn is_json(bytes: &[u8]) -> bool {
    as_raw(bytes).is_some()
}

#[cfg(test)]
mod tests {
    #[derive(serde::Serialize)]
    struct Holder {
        #[serde(with = "super")]
        data: bytes::Bytes,
    }

    #[test]
    fn line_breaks_between_tokens_become_spaces() {
        let h = Holder {
            data: bytes::Bytes::from_static(b"{\"a\":\r\n [1,\n2], \"b\": \"x\\ny\"}"),
        };
        let out = serde_json::to_string(&h).unwrap();
        assert!(!out.contains('\n') && !out.contains('\r'), "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"], serde_json::json!({"a": [1, 2], "b": "x\ny"}));
    }
}
