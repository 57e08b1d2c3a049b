//! Protocol codes: client error codes (reply `error.code`), disconnect codes
//! (WebSocket close code + reason) and unsubscribe codes (unsubscribe pushes).
//!
//! ```
//! use switchboard_proto::codes::{ClientError, Disconnect};
//! let err = ClientError::PERMISSION_DENIED.to_error();
//! assert_eq!(err.code, 103);
//! assert!(Disconnect::SHUTDOWN.reconnect());
//! assert!(!Disconnect::INVALID_TOKEN.reconnect());
//! ```

use std::borrow::Cow;

use crate::client;

/// A built-in client protocol error: code, default message and whether the
/// client may retry. Turn it into a wire [`client::Error`] with
/// [`ClientError::to_error`] or [`ClientError::with_message`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientError {
    /// Error code.
    pub code: u32,
    /// Default message.
    pub message: &'static str,
    /// Whether the error is temporary (the client may retry).
    pub temporary: bool,
}

impl ClientError {
    const fn new(code: u32, message: &'static str, temporary: bool) -> ClientError {
        ClientError {
            code,
            message,
            temporary,
        }
    }

    /// 100: internal server error (temporary).
    pub const INTERNAL: ClientError = ClientError::new(100, "internal server error", true);
    /// 101: unauthorized.
    pub const UNAUTHORIZED: ClientError = ClientError::new(101, "unauthorized", false);
    /// 102: unknown channel (namespace not configured).
    pub const UNKNOWN_CHANNEL: ClientError = ClientError::new(102, "unknown channel", false);
    /// 103: permission denied.
    pub const PERMISSION_DENIED: ClientError = ClientError::new(103, "permission denied", false);
    /// 104: method not found.
    pub const METHOD_NOT_FOUND: ClientError = ClientError::new(104, "method not found", false);
    /// 105: already subscribed.
    pub const ALREADY_SUBSCRIBED: ClientError = ClientError::new(105, "already subscribed", false);
    /// 106: limit exceeded.
    pub const LIMIT_EXCEEDED: ClientError = ClientError::new(106, "limit exceeded", false);
    /// 107: bad request (malformed data; retrying does not help).
    pub const BAD_REQUEST: ClientError = ClientError::new(107, "bad request", false);
    /// 108: not available (feature disabled for this channel).
    pub const NOT_AVAILABLE: ClientError = ClientError::new(108, "not available", false);
    /// 109: token expired (the client should refresh its token).
    pub const TOKEN_EXPIRED: ClientError = ClientError::new(109, "token expired", false);
    /// 110: expired (connection expired).
    pub const EXPIRED: ClientError = ClientError::new(110, "expired", false);
    /// 111: too many requests (rate limited; temporary).
    pub const TOO_MANY_REQUESTS: ClientError = ClientError::new(111, "too many requests", true);
    /// 112: unrecoverable position (history cannot satisfy the requested position).
    pub const UNRECOVERABLE_POSITION: ClientError =
        ClientError::new(112, "unrecoverable position", false);

    /// All built-in client errors, by code.
    pub const ALL: [ClientError; 13] = [
        ClientError::INTERNAL,
        ClientError::UNAUTHORIZED,
        ClientError::UNKNOWN_CHANNEL,
        ClientError::PERMISSION_DENIED,
        ClientError::METHOD_NOT_FOUND,
        ClientError::ALREADY_SUBSCRIBED,
        ClientError::LIMIT_EXCEEDED,
        ClientError::BAD_REQUEST,
        ClientError::NOT_AVAILABLE,
        ClientError::TOKEN_EXPIRED,
        ClientError::EXPIRED,
        ClientError::TOO_MANY_REQUESTS,
        ClientError::UNRECOVERABLE_POSITION,
    ];

    /// The built-in error with this code, if any.
    pub fn from_code(code: u32) -> Option<ClientError> {
        ClientError::ALL.into_iter().find(|e| e.code == code)
    }

    /// The wire error with the default message.
    pub fn to_error(&self) -> client::Error {
        client::Error {
            code: self.code,
            message: self.message.to_owned(),
            temporary: self.temporary,
        }
    }

    /// The wire error with a custom message.
    pub fn with_message(&self, message: impl Into<String>) -> client::Error {
        client::Error {
            code: self.code,
            message: message.into(),
            temporary: self.temporary,
        }
    }
}

impl From<ClientError> for client::Error {
    fn from(e: ClientError) -> client::Error {
        e.to_error()
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ClientError {}

/// Maximum length in bytes of a WebSocket close reason (RFC 6455: 125 bytes of
/// control frame payload minus the 2-byte code).
pub const MAX_CLOSE_REASON_LEN: usize = 123;

/// A disconnect: WebSocket close code + reason. Codes 3000–3499 (and anything
/// below 3500 that is not in 3500–3999) tell the client to reconnect; codes
/// 3500–3999 tell it not to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Disconnect {
    /// Close code.
    pub code: u32,
    /// Close reason.
    pub reason: Cow<'static, str>,
}

impl Disconnect {
    const fn of(code: u32, reason: &'static str) -> Disconnect {
        Disconnect {
            code,
            reason: Cow::Borrowed(reason),
        }
    }

    /// 3000: connection closed (normal close, reconnect).
    pub const CONNECTION_CLOSED: Disconnect = Disconnect::of(3000, "connection closed");
    /// 3001: server shutdown (reconnect).
    pub const SHUTDOWN: Disconnect = Disconnect::of(3001, "shutdown");
    /// 3004: internal server error (reconnect).
    pub const SERVER_ERROR: Disconnect = Disconnect::of(3004, "internal server error");
    /// 3005: connection expired (reconnect with a fresh token).
    pub const EXPIRED: Disconnect = Disconnect::of(3005, "connection expired");
    /// 3006: subscription expired (reconnect).
    pub const SUBSCRIPTION_EXPIRED: Disconnect = Disconnect::of(3006, "subscription expired");
    /// 3008: client too slow to read its messages (reconnect).
    pub const SLOW: Disconnect = Disconnect::of(3008, "slow");
    /// 3009: write error (reconnect).
    pub const WRITE_ERROR: Disconnect = Disconnect::of(3009, "write error");
    /// 3010: insufficient state (missed publications; reconnect).
    pub const INSUFFICIENT_STATE: Disconnect = Disconnect::of(3010, "insufficient state");
    /// 3011: forced reconnect.
    pub const FORCE_RECONNECT: Disconnect = Disconnect::of(3011, "force reconnect");
    /// 3012: no pong received in time (reconnect).
    pub const NO_PONG: Disconnect = Disconnect::of(3012, "no pong");
    /// 3013: too many requests (reconnect with backoff).
    pub const TOO_MANY_REQUESTS: Disconnect = Disconnect::of(3013, "too many requests");
    /// 3500: invalid token (do not reconnect).
    pub const INVALID_TOKEN: Disconnect = Disconnect::of(3500, "invalid token");
    /// 3501: bad request (do not reconnect).
    pub const BAD_REQUEST: Disconnect = Disconnect::of(3501, "bad request");
    /// 3502: stale connection, no connect command in time (do not reconnect).
    pub const STALE: Disconnect = Disconnect::of(3502, "stale");
    /// 3503: forced disconnect (do not reconnect).
    pub const FORCE_NO_RECONNECT: Disconnect = Disconnect::of(3503, "force disconnect");
    /// 3504: connection limit reached (do not reconnect).
    pub const CONNECTION_LIMIT: Disconnect = Disconnect::of(3504, "connection limit");
    /// 3505: channel limit reached (do not reconnect).
    pub const CHANNEL_LIMIT: Disconnect = Disconnect::of(3505, "channel limit");
    /// 3506: inappropriate protocol (do not reconnect).
    pub const INAPPROPRIATE_PROTOCOL: Disconnect = Disconnect::of(3506, "inappropriate protocol");
    /// 3507: permission denied (do not reconnect).
    pub const PERMISSION_DENIED: Disconnect = Disconnect::of(3507, "permission denied");
    /// 3508: not available (do not reconnect).
    pub const NOT_AVAILABLE: Disconnect = Disconnect::of(3508, "not available");
    /// 3509: too many errors (do not reconnect).
    pub const TOO_MANY_ERRORS: Disconnect = Disconnect::of(3509, "too many errors");

    /// A disconnect with a custom code and reason.
    pub fn new(code: u32, reason: impl Into<Cow<'static, str>>) -> Disconnect {
        Disconnect {
            code,
            reason: reason.into(),
        }
    }

    /// Whether the client should reconnect: false for codes 3500–3999, true otherwise.
    pub fn reconnect(&self) -> bool {
        should_reconnect(self.code)
    }

    /// The close code as a WebSocket close code (codes above `u16::MAX` map to 3004).
    pub fn close_code(&self) -> u16 {
        u16::try_from(self.code).unwrap_or(3004)
    }

    /// The reason truncated (at a char boundary) to [`MAX_CLOSE_REASON_LEN`] bytes,
    /// as a WebSocket close frame requires.
    pub fn close_reason(&self) -> &str {
        let r: &str = &self.reason;
        if r.len() <= MAX_CLOSE_REASON_LEN {
            return r;
        }
        let mut end = MAX_CLOSE_REASON_LEN;
        while !r.is_char_boundary(end) {
            end -= 1;
        }
        &r[..end]
    }

    /// The disconnect push body for transports without close frames (SSE,
    /// HTTP-streaming), with `reconnect` derived from the code.
    pub fn to_push(&self) -> client::Disconnect {
        client::Disconnect {
            code: self.code,
            reason: self.reason.clone().into_owned(),
            reconnect: self.reconnect(),
        }
    }
}

impl From<&Disconnect> for client::Disconnect {
    fn from(d: &Disconnect) -> client::Disconnect {
        d.to_push()
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.reason)
    }
}

/// Whether a disconnect code tells the client to reconnect (false for 3500–3999).
pub fn should_reconnect(code: u32) -> bool {
    !(3500..=3999).contains(&code)
}

/// An unsubscribe code + reason for unsubscribe pushes. Codes 2500–2999 tell
/// the client to resubscribe; 2000–2499 tell it not to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unsubscribe {
    /// Unsubscribe code.
    pub code: u32,
    /// Unsubscribe reason.
    pub reason: Cow<'static, str>,
}

impl Unsubscribe {
    /// 2000: unsubscribed by the server (do not resubscribe).
    pub const SERVER: Unsubscribe = Unsubscribe {
        code: 2000,
        reason: Cow::Borrowed("server unsubscribe"),
    };
    /// 2500: insufficient state (missed publications; resubscribe).
    pub const INSUFFICIENT_STATE: Unsubscribe = Unsubscribe {
        code: 2500,
        reason: Cow::Borrowed("insufficient state"),
    };

    /// An unsubscribe with a custom code and reason.
    pub fn new(code: u32, reason: impl Into<Cow<'static, str>>) -> Unsubscribe {
        Unsubscribe {
            code,
            reason: reason.into(),
        }
    }

    /// Whether the client should resubscribe (codes 2500–2999).
    pub fn resubscribe(&self) -> bool {
        (2500..=2999).contains(&self.code)
    }

    /// The unsubscribe push body.
    pub fn to_push(&self) -> client::Unsubscribe {
        client::Unsubscribe {
            code: self.code,
            reason: self.reason.clone().into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_ranges() {
        assert!(Disconnect::CONNECTION_CLOSED.reconnect());
        assert!(Disconnect::TOO_MANY_REQUESTS.reconnect());
        assert!(!Disconnect::INVALID_TOKEN.reconnect());
        assert!(!Disconnect::TOO_MANY_ERRORS.reconnect());
        assert!(Unsubscribe::INSUFFICIENT_STATE.resubscribe());
        assert!(!Unsubscribe::SERVER.resubscribe());
        assert!(!Disconnect::STALE.to_push().reconnect);
        assert_eq!(Disconnect::SLOW.to_push().code, 3008);
    }

    #[test]
    fn client_errors() {
        assert_eq!(
            ClientError::from_code(112),
            Some(ClientError::UNRECOVERABLE_POSITION)
        );
        assert_eq!(ClientError::from_code(99), None);
        let e: client::Error = ClientError::INTERNAL.into();
        assert!(e.temporary);
        assert_eq!(e.message, "internal server error");
        assert_eq!(ClientError::BAD_REQUEST.with_message("x").message, "x");
    }

    #[test]
    fn close_reason_truncated_on_char_boundary() {
        let d = Disconnect::new(4000, "é".repeat(100));
        let r = d.close_reason();
        assert!(r.len() <= MAX_CLOSE_REASON_LEN);
        assert_eq!(r.len(), 122);
        assert_eq!(Disconnect::SHUTDOWN.close_reason(), "shutdown");
        assert_eq!(Disconnect::new(70000, "x").close_code(), 3004);
    }
}
