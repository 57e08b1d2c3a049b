//! Escaping arbitrary names into NATS subject tokens and KV keys.
//!
//! Channel names may contain `.`, `*`, `>`, `:` and any Unicode, none of
//! which may appear in a subject token as is. Bytes in `[A-Za-z0-9_-]` are
//! kept, every other byte becomes the escape character followed by two
//! upper-case hex digits, so the encoding is injective, readable in
//! `nats sub` output (`chat:lobby` → `chat~3Alobby`) and at most three
//! times longer. The empty name is the lone escape character, which no other
//! name encodes to.

/// Escape for subject tokens (`~` is a legal subject character).
pub(crate) const SUBJECT_ESCAPE: u8 = b'~';
/// Escape for JetStream KV keys (which allow `[-/_=.a-zA-Z0-9]` only).
pub(crate) const KEY_ESCAPE: u8 = b'=';

/// Appends the escaped form of `name` to `out`.
pub(crate) fn escape_into(name: &str, escape: u8, out: &mut String) {
    if name.is_empty() {
        out.push(char::from(escape));
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push(char::from(escape));
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// The escaped form of `name`.
pub(crate) fn escape(name: &str, escape: u8) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    escape_into(name, escape, &mut out);
    out
}

/// Reverses [`escape`]; `None` for a token no name encodes to.
pub(crate) fn unescape(token: &str, escape: u8) -> Option<String> {
    if token.len() == 1 && token.as_bytes()[0] == escape {
        return Some(String::new());
    }
    if token.is_empty() {
        return None;
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == escape {
            let hex = token.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_roundtrips() {
        for (name, want) in [
            ("chat", "chat"),
            ("chat:lobby", "chat~3Alobby"),
            ("a.b*c>d", "a~2Eb~2Ac~3Ed"),
            ("~", "~7E"),
            ("", "~"),
            ("ü", "~C3~BC"),
            ("user#42,7", "user~2342~2C7"),
        ] {
            assert_eq!(escape(name, SUBJECT_ESCAPE), want);
            assert_eq!(unescape(want, SUBJECT_ESCAPE).as_deref(), Some(name));
        }
        assert_eq!(escape("room:a.b", KEY_ESCAPE), "room=3Aa=2Eb");
        assert_eq!(
            unescape("room=3Aa=2Eb", KEY_ESCAPE).as_deref(),
            Some("room:a.b")
        );
        assert_eq!(unescape("~Z", SUBJECT_ESCAPE), None);
        assert_eq!(unescape("", SUBJECT_ESCAPE), None);
    }

    #[test]
    fn escaped_tokens_are_valid_subject_tokens() {
        let nasty = "a b\t.c*>~$\u{0}é";
        let token = escape(nasty, SUBJECT_ESCAPE);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'~')
        );
        assert_eq!(unescape(&token, SUBJECT_ESCAPE).as_deref(), Some(nasty));
    }
}
