//! Small crypto and encoding helpers (aws-lc-rs only).

use std::time::Duration;

use base64::Engine as _;

pub(crate) const B64URL: base64::engine::GeneralPurpose =
    base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// `n` random bytes from the system RNG, base64url without padding.
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The system RNG failing is unrecoverable; issuing predictable tokens
    // would be worse than stopping.
    aws_lc_rs::rand::fill(&mut bytes).expect("system random number generator failed");
    B64URL.encode(bytes)
}

/// SHA-256 of `data` as lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = String::with_capacity(64);
    for b in digest.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// SHA-256 of `data`, base64url (the PKCE S256 transform).
pub(crate) fn sha256_b64url(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    B64URL.encode(digest.as_ref())
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A duration in whole seconds as `i64`, saturating.
pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Whether `s` is made only of RFC 7636 unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) and has a length in `43..=128`.
pub(crate) fn is_pkce_value(s: &str) -> bool {
    (43..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}
