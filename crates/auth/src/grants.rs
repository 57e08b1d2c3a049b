//! Switchboard grants: what a token allows on channels and rooms.
//!
//! A token's `grants` claim (a Switchboard extension to the Centrifugo claim
//! set) lists channel and room patterns with the actions they allow. The
//! gateway asks [`Grants::allows_channel`] / [`Grants::allows_room`] before
//! each operation. Patterns are globs where `*` matches any run of
//! characters (including none, and including `:` and `/`); every other
//! character matches itself. A grant list allows an action when *any* entry
//! whose pattern matches allows it; there are no deny entries.
//!
//! ```
//! use switchboard_auth::grants::{ChannelAction, ChannelGrant, Grants};
//!
//! let grants = Grants {
//!     channels: vec![ChannelGrant::read("chat:*"), ChannelGrant::all("chat:own.*")],
//!     rooms: vec![],
//! };
//! assert!(grants.allows_channel("chat:lobby", ChannelAction::Subscribe));
//! assert!(!grants.allows_channel("chat:lobby", ChannelAction::Publish));
//! assert!(grants.allows_channel("chat:own.42", ChannelAction::Publish));
//! assert!(!grants.allows_channel("news", ChannelAction::Subscribe));
//! ```

use serde::{Deserialize, Serialize};

/// Channel and room permissions carried by a token (claim `grants`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Channel patterns and what they allow.
    pub channels: Vec<ChannelGrant>,
    /// Room patterns and what they allow.
    pub rooms: Vec<RoomGrant>,
}

/// What a token may do on the channels matching `pattern`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChannelGrant {
    /// Glob over channel names (`*` matches any run of characters).
    pub pattern: String,
    /// May subscribe.
    pub subscribe: bool,
    /// May publish.
    pub publish: bool,
    /// May query presence.
    pub presence: bool,
    /// May read history.
    pub history: bool,
}

/// What a token may do in the rooms matching `pattern`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomGrant {
    /// Glob over room ids (`*` matches any run of characters).
    pub pattern: String,
    /// May join the room.
    pub join: bool,
    /// May publish an audio track.
    pub publish_audio: bool,
    /// May publish a camera video track.
    pub publish_video: bool,
    /// May publish a screen-share track.
    pub publish_screen: bool,
    /// May receive other participants' media.
    pub subscribe_media: bool,
    /// May moderate the room (mute or remove others, end the call).
    pub admin: bool,
}

/// An action on a channel, checked with [`Grants::allows_channel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChannelAction {
    /// Subscribe to the channel.
    Subscribe,
    /// Publish into the channel.
    Publish,
    /// Read the channel's presence.
    Presence,
    /// Read the channel's history.
    History,
}

/// An action in a room, checked with [`Grants::allows_room`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomAction {
    /// Join the room.
    Join,
    /// Publish audio.
    PublishAudio,
    /// Publish camera video.
    PublishVideo,
    /// Publish a screen share.
    PublishScreen,
    /// Receive others' media.
    SubscribeMedia,
    /// Moderate the room.
    Admin,
}

impl ChannelGrant {
    /// Every channel action on `pattern`.
    pub fn all(pattern: impl Into<String>) -> Self {
        ChannelGrant {
            pattern: pattern.into(),
            subscribe: true,
            publish: true,
            presence: true,
            history: true,
        }
    }

    /// Read-only access on `pattern`: subscribe, presence and history.
    pub fn read(pattern: impl Into<String>) -> Self {
        ChannelGrant {
            pattern: pattern.into(),
            subscribe: true,
            publish: false,
            presence: true,
            history: true,
        }
    }

    /// Whether this entry allows `action` (ignoring the pattern).
    pub fn allows(&self, action: ChannelAction) -> bool {
        match action {
            ChannelAction::Subscribe => self.subscribe,
            ChannelAction::Publish => self.publish,
            ChannelAction::Presence => self.presence,
            ChannelAction::History => self.history,
        }
    }
}

impl RoomGrant {
    /// Every room action on `pattern`, including `admin`.
    pub fn all(pattern: impl Into<String>) -> Self {
        RoomGrant {
            pattern: pattern.into(),
            join: true,
            publish_audio: true,
            publish_video: true,
            publish_screen: true,
            subscribe_media: true,
            admin: true,
        }
    }

    /// A regular participant on `pattern`: join, publish audio/video/screen
    /// and receive media, but no `admin`.
    pub fn participant(pattern: impl Into<String>) -> Self {
        RoomGrant {
            admin: false,
            ..RoomGrant::all(pattern)
        }
    }

    /// Whether this entry allows `action` (ignoring the pattern).
    pub fn allows(&self, action: RoomAction) -> bool {
        match action {
            RoomAction::Join => self.join,
            RoomAction::PublishAudio => self.publish_audio,
            RoomAction::PublishVideo => self.publish_video,
            RoomAction::PublishScreen => self.publish_screen,
            RoomAction::SubscribeMedia => self.subscribe_media,
            RoomAction::Admin => self.admin,
        }
    }
}

impl Grants {
    /// Everything on every channel and room (pattern `*`).
    pub fn all() -> Grants {
        Grants {
            channels: vec![ChannelGrant::all("*")],
            rooms: vec![RoomGrant::all("*")],
        }
    }

    /// Whether no entry grants anything.
    pub fn is_empty(&self) -> bool {
        self.channels.is_empty() && self.rooms.is_empty()
    }

    /// Whether some entry matching `channel` allows `action`.
    pub fn allows_channel(&self, channel: &str, action: ChannelAction) -> bool {
        self.channels
            .iter()
            .any(|g| g.allows(action) && glob_match(&g.pattern, channel))
    }

    /// Whether some entry matching `room` allows `action`.
    pub fn allows_room(&self, room: &str, action: RoomAction) -> bool {
        self.rooms
            .iter()
            .any(|g| g.allows(action) && glob_match(&g.pattern, room))
    }

    /// Adds every entry of `other` (union of permissions); exact duplicates
    /// are skipped.
    pub fn merge(&mut self, other: &Grants) {
        for g in &other.channels {
            if !self.channels.contains(g) {
                self.channels.push(g.clone());
            }
        }
        for g in &other.rooms {
            if !self.rooms.contains(g) {
                self.rooms.push(g.clone());
            }
        }
    }
}

/// Glob match where `*` matches any run of characters and everything else
/// matches itself. Linear-time greedy matching with one backtrack point, so
/// hostile patterns such as `*a*a*a*b` cannot blow up.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` seen and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last star swallow one more character and retry.
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_cases() {
        let yes = [
            ("*", ""),
            ("*", "anything:at/all"),
            ("chat:*", "chat:"),
            ("chat:*", "chat:lobby"),
            ("chat:*", "chat:a:b"),
            ("*:lobby", "chat:lobby"),
            ("a*b*c", "abc"),
            ("a*b*c", "aXXbYYc"),
            ("a*b*c", "abbbc"),
            ("exact", "exact"),
            ("**", "x"),
            ("user#*", "user#42"),
            ("é*", "été"),
        ];
        for (p, t) in yes {
            assert!(glob_match(p, t), "{p} should match {t}");
        }
        let no = [
            ("chat:*", "chat"),
            ("chat:*", "news:chat:x"),
            ("exact", "exactly"),
            ("exact", "exac"),
            ("a*b*c", "acb"),
            ("", "x"),
            ("*a", "b"),
        ];
        for (p, t) in no {
            assert!(!glob_match(p, t), "{p} should not match {t}");
        }
        assert!(glob_match("", ""));
    }

    #[test]
    fn glob_is_not_exponential() {
        let text = "a".repeat(5000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!glob_match(&pattern, &text));
    }

    #[test]
    fn grants_allow_by_any_matching_entry() {
        let g = Grants {
            channels: vec![
                ChannelGrant::read("news:*"),
                ChannelGrant {
                    pattern: "news:breaking".into(),
                    publish: true,
                    ..Default::default()
                },
            ],
            rooms: vec![
                RoomGrant::participant("team-*"),
                RoomGrant {
                    pattern: "team-ops".into(),
                    admin: true,
                    ..Default::default()
                },
            ],
        };
        assert!(g.allows_channel("news:sport", ChannelAction::Subscribe));
        assert!(g.allows_channel("news:sport", ChannelAction::History));
        assert!(!g.allows_channel("news:sport", ChannelAction::Publish));
        assert!(g.allows_channel("news:breaking", ChannelAction::Publish));
        assert!(!g.allows_channel("chat:x", ChannelAction::Subscribe));
        assert!(g.allows_room("team-dev", RoomAction::PublishScreen));
        assert!(!g.allows_room("team-dev", RoomAction::Admin));
        assert!(g.allows_room("team-ops", RoomAction::Admin));
        assert!(!g.allows_room("other", RoomAction::Join));
        assert!(!Grants::default().allows_channel("x", ChannelAction::Subscribe));
        assert!(Grants::all().allows_room("x", RoomAction::Admin));
        assert!(Grants::all().allows_channel("a:b", ChannelAction::Publish));
    }

    #[test]
    fn grants_serde_and_merge() {
        let g: Grants = serde_json::from_str(
            r#"{"channels":[{"pattern":"chat:*","subscribe":true}],"rooms":[{"pattern":"*","join":true}]}"#,
        )
        .unwrap();
        assert!(g.allows_channel("chat:1", ChannelAction::Subscribe));
        assert!(!g.allows_channel("chat:1", ChannelAction::Publish));
        assert!(g.allows_room("r", RoomAction::Join));
        assert!(serde_json::from_str::<Grants>(r#"{"chanels":[]}"#).is_err());
        let mut m = g.clone();
        m.merge(&g);
        assert_eq!(m, g);
        m.merge(&Grants::all());
        assert!(m.allows_channel("x", ChannelAction::Publish));
        assert_eq!(m.channels.len(), 2);
    }
}
