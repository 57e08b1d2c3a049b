//! Channel names: validation, namespaces and user-limited channels.
//!
//! A channel `ns:rest` belongs to namespace `ns`; a channel without `:` belongs
//! to the default namespace. A channel whose name contains `#` is user-limited:
//! the part after the last `#` lists the users (comma-separated) who may
//! subscribe, e.g. `dialog:chat#alice,bob`. A name starting with `$` is
//! private: subscribing always needs a subscription token.

use thiserror::Error;

/// Separator between a namespace and the rest of a channel name.
pub const NAMESPACE_SEPARATOR: char = ':';
/// Separator before the user list of a user-limited channel.
pub const USER_BOUNDARY: char = '#';
/// Separator between users in a user-limited channel.
pub const USER_SEPARATOR: char = ',';
/// Prefix of channels that always need a subscription token.
pub const PRIVATE_PREFIX: char = '$';

/// Why a channel name was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ChannelNameError {
    /// The name is empty.
    #[error("channel name is empty")]
    Empty,
    /// The name is longer than the configured limit.
    #[error("channel name is longer than {max} bytes")]
    TooLong {
        /// The configured limit in bytes.
        max: usize,
    },
    /// The name contains whitespace or a control character.
    #[error("channel name contains a forbidden character")]
    ForbiddenCharacter,
}

/// Checks that `name` may be used as a channel name.
pub fn validate(name: &str, max_len: usize) -> Result<(), ChannelNameError> {
    if name.is_empty() {
        return Err(ChannelNameError::Empty);
    }
    if name.len() > max_len {
        return Err(ChannelNameError::TooLong { max: max_len });
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ChannelNameError::ForbiddenCharacter);
    }
    Ok(())
}

/// The namespace of a channel, if it has one (`chat:room` → `chat`).
pub fn namespace(name: &str) -> Option<&str> {
    let name = name.strip_prefix(PRIVATE_PREFIX).unwrap_or(name);
    name.split_once(NAMESPACE_SEPARATOR).map(|(ns, _)| ns)
}

/// Whether the channel always needs a subscription token (`$` prefix).
pub fn is_private(name: &str) -> bool {
    name.starts_with(PRIVATE_PREFIX)
}

/// The users allowed in a user-limited channel, or `None` if the channel is
/// not user-limited.
pub fn limited_users(name: &str) -> Option<impl Iterator<Item = &str>> {
    let (_, users) = name.rsplit_once(USER_BOUNDARY)?;
    Some(users.split(USER_SEPARATOR).filter(|u| !u.is_empty()))
}

/// Whether `user` is allowed by the user list of a user-limited channel.
/// Channels that are not user-limited allow nobody through this rule.
pub fn user_allowed(name: &str, user: &str) -> bool {
    !user.is_empty() && limited_users(name).is_some_and(|mut users| users.any(|u| u == user))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert_eq!(namespace("chat:room"), Some("chat"));
        assert_eq!(namespace("$chat:room"), Some("chat"));
        assert_eq!(namespace("room"), None);
        assert_eq!(namespace("a:b:c"), Some("a"));
    }

    #[test]
    fn validation() {
        assert_eq!(validate("", 10), Err(ChannelNameError::Empty));
        assert_eq!(
            validate("abcdefghijk", 10),
            Err(ChannelNameError::TooLong { max: 10 })
        );
        assert_eq!(
            validate("a b", 10),
            Err(ChannelNameError::ForbiddenCharacter)
        );
        assert_eq!(
            validate("a\u{0}", 10),
            Err(ChannelNameError::ForbiddenCharacter)
        );
        assert!(validate("chat:room#a,b", 100).is_ok());
    }

    #[test]
    fn user_limited() {
        assert!(user_allowed("dialog:x#alice,bob", "alice"));
        assert!(user_allowed("dialog:x#alice,bob", "bob"));
        assert!(!user_allowed("dialog:x#alice,bob", "eve"));
        assert!(!user_allowed("dialog:x#alice,bob", ""));
        assert!(!user_allowed("dialog:x", "alice"));
    }
}
