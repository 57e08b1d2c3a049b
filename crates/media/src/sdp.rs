//! A light scan of SDP text for policy checks (kinds, codecs, rids, ICE
//! credentials) before str0m parses and applies it. str0m stays the
//! authority on validity; this only extracts what the SFU decides on.

use crate::error::MediaError;
use crate::types::TrackKind;

/// Codecs the SFU forwards (rtpmap encoding names, case-insensitive).
pub(crate) const SUPPORTED_CODECS: &[&str] = &["opus", "vp8", "vp9", "h264"];

/// One m-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Section {
    /// `audio`, `video`, `application` or other.
    pub media: String,
    pub mid: Option<String>,
    pub port_zero: bool,
    /// `sendrecv` if absent.
    pub direction: String,
    pub codecs: Vec<String>,
    /// `a=rid:<id> send` in order.
    pub send_rids: Vec<String>,
    pub has_ufrag: bool,
    pub has_pwd: bool,
    pub has_fingerprint: bool,
}

impl Section {
    /// Audio or video, if it is either.
    pub fn kind(&self) -> Option<TrackKind> {
        match self.media.as_str() {
            "audio" => Some(TrackKind::Audio),
            "video" => Some(TrackKind::Video),
            _ => None,
        }
    }

    /// Media the offerer sends (an active audio/video m-line).
    pub fn is_sending(&self) -> bool {
        !self.port_zero
            && self.kind().is_some()
            && matches!(self.direction.as_str(), "sendrecv" | "sendonly")
    }

    pub fn has_supported_codec(&self) -> bool {
        self.codecs
            .iter()
            .any(|c| SUPPORTED_CODECS.iter().any(|s| c.eq_ignore_ascii_case(s)))
    }
}

/// The parts of an SDP the SFU checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    pub sections: Vec<Section>,
}

/// Scan `sdp`; refuse oversize or obviously broken text with `BadSdp`.
pub(crate) fn scan(sdp: &str, max_bytes: usize) -> Result<Scan, MediaError> {
    if sdp.len() > max_bytes {
        return Err(MediaError::BadSdp(format!(
            "{} bytes, limit {max_bytes}",
            sdp.len()
        )));
    }
    if !sdp.trim_start().starts_with("v=0") {
        return Err(MediaError::BadSdp("does not start with v=0".into()));
    }
    let mut session_ufrag = false;
    let mut session_pwd = false;
    let mut session_fp = false;
    let mut sections: Vec<Section> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(rest) = line.strip_prefix("m=") {
            let mut parts = rest.split(' ');
            let media = parts.next().unwrap_or_default().to_owned();
            let port_zero = parts.next().is_some_and(|p| p == "0");
            sections.push(Section {
                media,
                mid: None,
                port_zero,
                direction: "sendrecv".into(),
                codecs: Vec::new(),
                send_rids: Vec::new(),
                has_ufrag: false,
                has_pwd: false,
                has_fingerprint: false,
            });
            continue;
        }
        let Some(attr) = line.strip_prefix("a=") else {
            continue;
        };
        let (name, value) = attr.split_once(':').unwrap_or((attr, ""));
        let Some(sec) = sections.last_mut() else {
            match name {
                "ice-ufrag" => session_ufrag = !value.is_empty(),
                "ice-pwd" => session_pwd = !value.is_empty(),
                "fingerprint" => session_fp = true,
                _ => {}
            }
            continue;
        };
        match name {
            "mid" => sec.mid = Some(value.to_owned()),
            "sendrecv" | "sendonly" | "recvonly" | "inactive" => sec.direction = name.to_owned(),
            "rtpmap" => {
                // a=rtpmap:96 VP8/90000
                if let Some(enc) = value.split_once(' ').map(|(_, e)| e)
                    && let Some(codec) = enc.split('/').next()
                {
                    sec.codecs.push(codec.to_owned());
                }
            }
            "rid" => {
                let mut p = value.split(' ');
                if let (Some(id), Some("send")) = (p.next(), p.next()) {
                    sec.send_rids.push(id.to_owned());
                }
            }
            "ice-ufrag" => sec.has_ufrag = !value.is_empty(),
            "ice-pwd" => sec.has_pwd = !value.is_empty(),
            "fingerprint" => sec.has_fingerprint = true,
            _ => {}
        }
    }
    if sections.is_empty() {
        return Err(MediaError::BadSdp("no m-lines".into()));
    }
    for s in &sections {
        if !matches!(s.media.as_str(), "audio" | "video" | "application") {
            return Err(MediaError::BadSdp("unknown media type".into()));
        }
        if s.port_zero {
            continue;
        }
        if !(s.has_ufrag || session_ufrag) || !(s.has_pwd || session_pwd) {
            return Err(MediaError::BadSdp("missing ICE credentials".into()));
        }
        if !(s.has_fingerprint || session_fp) {
            return Err(MediaError::BadSdp("missing DTLS fingerprint".into()));
        }
        match &s.mid {
            None => return Err(MediaError::BadSdp("m-line without a=mid".into())),
            Some(m)
                if m.is_empty()
                    || m.len() > 32
                    || !m
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
            {
                return Err(MediaError::BadSdp(
                    "a=mid must be 1-32 of [A-Za-z0-9_-]".into(),
                ));
            }
            _ => {}
        }
    }
    Ok(Scan { sections })
}

/// Order simulcast rids lowest layer first: known names (`q`/`h`/`f`,
/// `l`/`m`/`h`, `low`/`mid`/`high`, `0`/`1`/`2`) by rank, others as offered.
pub(crate) fn order_rids(rids: &[String]) -> Vec<String> {
    fn rank(r: &str, all: &[String]) -> Option<usize> {
        let has = |x: &str| all.iter().any(|a| a == x);
        match r {
            "q" | "low" | "0" => Some(0),
            "m" | "mid" | "1" => Some(1),
            // `h` is "half" next to q/f, "high" next to l/m.
            "h" if has("l") || has("m") => Some(2),
            "h" => Some(1),
            "f" | "high" | "2" => Some(2),
            "l" => Some(0),
            _ => None,
        }
    }
    let mut out: Vec<String> = rids.to_vec();
    if out.iter().all(|r| rank(r, rids).is_some()) {
        out.sort_by_key(|r| rank(r, rids));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rid_order() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(order_rids(&v(&["f", "h", "q"])), v(&["q", "h", "f"]));
        assert_eq!(order_rids(&v(&["h", "m", "l"])), v(&["l", "m", "h"]));
        assert_eq!(order_rids(&v(&["x", "y"])), v(&["x", "y"]));
    }

    #[test]
    fn scan_refuses_garbage() {
        assert!(matches!(scan("hello", 1000), Err(MediaError::BadSdp(_))));
        assert!(matches!(scan("v=0\r\n", 1000), Err(MediaError::BadSdp(_))));
        let big = "v=0\r\n".to_string() + &"a=x\r\n".repeat(1000);
        assert!(matches!(scan(&big, 1000), Err(MediaError::BadSdp(_))));
    }
}
