//! Per-namespace channel options and the decisions they drive.
//!
//! Option names follow Centrifugo's where they overlap, so an existing
//! Centrifugo configuration reads the same here.

use crate::channel;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use thiserror::Error;

/// How long a namespace keeps history beyond the recovery window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HistoryRetention {
    /// Only `history_size` / `history_ttl` bound the history (the default).
    #[default]
    Window,
    /// Keep every publication forever; page through it with `history`.
    Forever,
}

impl Serialize for HistoryRetention {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::Window => "window",
            Self::Forever => "forever",
        })
    }
}

impl<'de> Deserialize<'de> for HistoryRetention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "window" => Ok(Self::Window),
            "forever" => Ok(Self::Forever),
            other => Err(serde::de::Error::custom(format!(
                "invalid history_retention {other:?}: expected \"window\" or \"forever\""
            ))),
        }
    }
}

/// Options of one channel namespace (or of channels without a namespace).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Keep presence information (who is subscribed).
    pub presence: bool,
    /// Send join/leave pushes to subscribers who ask for them.
    pub join_leave: bool,
    /// Send join/leave pushes to every subscriber.
    pub force_push_join_leave: bool,
    /// Number of publications kept for history and recovery (0 = ephemeral).
    pub history_size: usize,
    /// How long publications stay in history.
    #[serde(
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub history_ttl: Option<Duration>,
    /// Keep the whole history instead of the window (`"forever"`).
    pub history_retention: HistoryRetention,
    /// Make every subscription recoverable, whatever the client asks.
    pub force_recovery: bool,
    /// Let clients ask for recovery (default when history is on).
    pub allow_recovery: Option<bool>,
    /// Clients may publish into channels of this namespace.
    pub allow_publish_for_client: bool,
    /// Subscribed clients may publish.
    pub allow_publish_for_subscriber: bool,
    /// Clients may subscribe without a subscription token.
    pub allow_subscribe_for_client: bool,
    /// Clients may ask for presence.
    pub allow_presence_for_client: bool,
    /// Subscribed clients may ask for presence.
    pub allow_presence_for_subscriber: bool,
    /// Clients may ask for history.
    pub allow_history_for_client: bool,
    /// Subscribed clients may ask for history.
    pub allow_history_for_subscriber: bool,
    /// Channels with `#user1,user2` are limited to the users listed.
    pub allow_user_limited_channels: bool,
    /// In ephemeral channels, a lagging subscriber gets only the latest
    /// publication per value of this top-level JSON field of the data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflate_key: Option<String>,
}

impl NamespaceOptions {
    /// Options of `--dev` mode: everything allowed, history and presence on.
    pub fn dev() -> Self {
        Self {
            presence: true,
            join_leave: true,
            force_push_join_leave: true,
            history_size: 1000,
            history_ttl: Some(Duration::from_secs(24 * 3600)),
            force_recovery: true,
            allow_publish_for_client: true,
            allow_subscribe_for_client: true,
            allow_presence_for_client: true,
            allow_history_for_client: true,
            allow_user_limited_channels: true,
            ..Self::default()
        }
    }

    /// Whether publications are stored (history, recovery, offsets).
    pub fn is_durable(&self) -> bool {
        self.history_size > 0 || self.history_retention == HistoryRetention::Forever
    }

    /// Whether a subscription may be recovered from a position.
    pub fn recovery_allowed(&self) -> bool {
        self.is_durable() && (self.force_recovery || self.allow_recovery.unwrap_or(true))
    }

    /// Checks option combinations that cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_ttl.is_some() && !self.is_durable() {
            return Err("history_ttl is set but history_size is 0".into());
        }
        if self.force_recovery && !self.is_durable() {
            return Err("force_recovery needs history_size > 0".into());
        }
        if self.conflate_key.is_some() && self.is_durable() {
            return Err("conflate_key is only for ephemeral namespaces (history_size = 0)".into());
        }
        if self.conflate_key.as_deref() == Some("") {
            return Err("conflate_key is empty".into());
        }
        Ok(())
    }
}

/// Why a channel has no rules.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    /// The channel's namespace is not configured.
    #[error("unknown namespace {0:?}")]
    UnknownNamespace(String),
}

/// Every namespace of a server: what applies to each channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Namespaces {
    /// Options of channels without a namespace.
    pub defaults: NamespaceOptions,
    /// Options by namespace name.
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    /// Channels of unconfigured namespaces use `defaults` instead of being
    /// refused (the `--dev` behaviour).
    pub allow_unknown_namespaces: bool,
}

impl Namespaces {
    /// The options that apply to `channel`.
    pub fn resolve(&self, channel: &str) -> Result<&NamespaceOptions, ResolveError> {
        match channel::namespace(channel) {
            None => Ok(&self.defaults),
            Some(ns) => match self.namespaces.get(ns) {
                Some(opts) => Ok(opts),
                None if self.allow_unknown_namespaces => Ok(&self.defaults),
                None => Err(ResolveError::UnknownNamespace(ns.to_string())),
            },
        }
    }

    /// Checks every namespace; the error names the bad key.
    pub fn validate(&self) -> Result<(), String> {
        self.defaults
            .validate()
            .map_err(|e| format!("channel.defaults: {e}"))?;
        for (name, opts) in &self.namespaces {
            if name.is_empty()
                || name.contains([':', '#', '$'])
                || name.chars().any(char::is_whitespace)
            {
                return Err(format!("channel.namespaces.{name}: invalid namespace name"));
            }
            opts.validate()
                .map_err(|e| format!("channel.namespaces.{name}: {e}"))?;
        }
        Ok(())
    }
}

/// What a connection asking for something presents.
#[derive(Clone, Copy, Debug)]
pub struct Requester<'a> {
    /// The user id (empty for anonymous).
    pub user: &'a str,
    /// Whether the connection is subscribed to the channel.
    pub subscribed: bool,
}

/// The outcome of a permission check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused: permission denied (protocol error 103).
    Deny,
    /// Allowed only with a valid subscription token.
    NeedsToken,
}

impl NamespaceOptions {
    /// May this requester subscribe to `channel` without a token?
    pub fn subscribe_decision(&self, channel: &str, who: Requester<'_>) -> Decision {
        if channel::is_private(channel) {
            return Decision::NeedsToken;
        }
        if channel::limited_users(channel).is_some() {
            if !self.allow_user_limited_channels {
                return Decision::NeedsToken;
            }
            return if channel::user_allowed(channel, who.user) {
                Decision::Allow
            } else {
                Decision::Deny
            };
        }
        if self.allow_subscribe_for_client {
            Decision::Allow
        } else {
            Decision::NeedsToken
        }
    }

    /// May this requester publish into the channel?
    pub fn publish_allowed(&self, who: Requester<'_>) -> bool {
        self.allow_publish_for_client || (self.allow_publish_for_subscriber && who.subscribed)
    }

    /// May this requester read the channel's presence?
    pub fn presence_allowed(&self, who: Requester<'_>) -> bool {
        self.presence
            && (self.allow_presence_for_client
                || (self.allow_presence_for_subscriber && who.subscribed))
    }

    /// May this requester read the channel's history?
    pub fn history_allowed(&self, who: Requester<'_>) -> bool {
        self.is_durable()
            && (self.allow_history_for_client
                || (self.allow_history_for_subscriber && who.subscribed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Namespaces {
        let mut n = Namespaces {
            defaults: NamespaceOptions::dev(),
            ..Default::default()
        };
        n.namespaces.insert(
            "secret".into(),
            NamespaceOptions {
                allow_subscribe_for_client: false,
                ..NamespaceOptions::dev()
            },
        );
        n
    }

    const ALICE: Requester<'static> = Requester {
        user: "alice",
        subscribed: false,
    };

    #[test]
    fn resolves_namespaces() {
        let n = ns();
        assert!(n.resolve("room").is_ok());
        assert!(!n.resolve("secret:x").unwrap().allow_subscribe_for_client);
        assert_eq!(
            n.resolve("nope:x"),
            Err(ResolveError::UnknownNamespace("nope".into()))
        );
        let dev = Namespaces {
            allow_unknown_namespaces: true,
            ..ns()
        };
        assert!(dev.resolve("nope:x").is_ok());
    }

    #[test]
    fn subscribe_rules() {
        let n = ns();
        assert_eq!(
            n.resolve("room").unwrap().subscribe_decision("room", ALICE),
            Decision::Allow
        );
        assert_eq!(
            n.resolve("secret:x")
                .unwrap()
                .subscribe_decision("secret:x", ALICE),
            Decision::NeedsToken
        );
        assert_eq!(
            n.defaults.subscribe_decision("$room", ALICE),
            Decision::NeedsToken
        );
        assert_eq!(
            n.defaults.subscribe_decision("d#alice,bob", ALICE),
            Decision::Allow
        );
        let eve = Requester {
            user: "eve",
            subscribed: false,
        };
        assert_eq!(
            n.defaults.subscribe_decision("d#alice,bob", eve),
            Decision::Deny
        );
    }

    #[test]
    fn publish_and_read_rules() {
        let ro = NamespaceOptions {
            allow_publish_for_client: false,
            ..NamespaceOptions::dev()
        };
        assert!(!ro.publish_allowed(ALICE));
        let sub_only = NamespaceOptions {
            allow_publish_for_subscriber: true,
            ..ro.clone()
        };
        assert!(!sub_only.publish_allowed(ALICE));
        assert!(sub_only.publish_allowed(Requester {
            user: "alice",
            subscribed: true
        }));
        let no_hist = NamespaceOptions {
            history_size: 0,
            history_ttl: None,
            ..NamespaceOptions::dev()
        };
        assert!(!no_hist.history_allowed(ALICE));
    }

    #[test]
    fn validation_names_the_problem() {
        let bad = NamespaceOptions {
            force_recovery: true,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("force_recovery"));
        let mut n = ns();
        n.namespaces.insert("bad".into(), bad);
        assert!(n.validate().unwrap_err().contains("channel.namespaces.bad"));
    }

    #[test]
    fn reads_centrifugo_names_from_toml_like_json() {
        let opts: NamespaceOptions = serde_json::from_str(
            r#"{"history_size":10,"history_ttl":"300s","presence":true,"allow_publish_for_client":true}"#,
        )
        .unwrap();
        assert_eq!(opts.history_ttl, Some(Duration::from_secs(300)));
        assert!(serde_json::from_str::<NamespaceOptions>(r#"{"histroy_size":1}"#).is_err());
    }
}
