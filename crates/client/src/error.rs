//! [`ClientError`]: why a client call or connection failed.

use switchboard_proto::client;

/// Why a call or a connection failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The server answered the command with an error reply (code, message,
    /// temporary flag; see `switchboard_proto::codes::ClientError`).
    #[error("server error {}: {}", .0.code, .0.message)]
    Protocol(client::Error),
    /// The server closed the connection with a WebSocket close frame
    /// (`code`/`reason`; Centrifugo disconnect codes are 3000–4999). A close
    /// frame without a status is reported as code 1005.
    #[error("disconnected: {code} {reason}")]
    Disconnected {
        /// Close code.
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// Network or WebSocket failure (connection refused or reset, handshake
    /// rejected, connection lost without a close frame, …).
    #[error("transport error: {0}")]
    Transport(String),
    /// The call did not complete within its timeout.
    #[error("timed out")]
    Timeout,
    /// The server sent something that could not be decoded, or a reply that
    /// lacks the expected result.
    #[error("decode error: {0}")]
    Decode(String),
}

impl ClientError {
    /// The server error code, for [`ClientError::Protocol`].
    pub fn protocol_code(&self) -> Option<u32> {
        match self {
            ClientError::Protocol(e) => Some(e.code),
            _ => None,
        }
    }

    /// The close code, for [`ClientError::Disconnected`].
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ClientError::Disconnected { code, .. } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn transport(e: impl std::fmt::Display) -> ClientError {
        ClientError::Transport(e.to_string())
    }
}

impl From<client::Error> for ClientError {
    fn from(e: client::Error) -> Self {
        ClientError::Protocol(e)
    }
}
