//! [`MediaConfig`]: the media node's socket, candidates and limits.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::error::MediaError;

/// Configuration of one media node. Build with [`MediaConfig::new`] and the
/// `with_*` setters; it is validated once by [`crate::Sfu::start`] /
/// [`crate::SfuCore::new`].
///
/// ```
/// use std::time::Duration;
/// use switchboard_media::MediaConfig;
/// let cfg = MediaConfig::new("0.0.0.0:7882".parse().unwrap())
///     .with_advertised_ips(vec!["203.0.113.7".parse().unwrap()])
///     .with_max_participants(50)
///     .with_connect_timeout(Duration::from_secs(15));
/// ```
#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub(crate) udp_addr: SocketAddr,
    pub(crate) advertised_ips: Vec<IpAddr>,
    pub(crate) max_participants: usize,
    pub(crate) max_participants_total: usize,
    pub(crate) max_tracks_per_participant: usize,
    pub(crate) max_sdp_bytes: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) stats_interval: Duration,
    pub(crate) keyframe_min_interval: Duration,
    pub(crate) speaker_interval: Duration,
    pub(crate) initial_bandwidth_bps: u64,
    pub(crate) bandwidth_layer_selection: bool,
    pub(crate) event_queue: usize,
}

impl MediaConfig {
    /// Defaults around the UDP address all peers share (`media.udp_addr`).
    /// Port 0 picks a free port (tests); the bound address is reported by
    /// [`crate::Sfu::local_addr`].
    pub fn new(udp_addr: SocketAddr) -> Self {
        MediaConfig {
            udp_addr,
            advertised_ips: Vec::new(),
            max_participants: 100,
            max_participants_total: 10_000,
            max_tracks_per_participant: 8,
            max_sdp_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(30),
            stats_interval: Duration::from_secs(2),
            keyframe_min_interval: Duration::from_millis(500),
            speaker_interval: Duration::from_millis(500),
            initial_bandwidth_bps: 1_500_000,
            bandwidth_layer_selection: true,
            event_queue: 4096,
        }
    }

    /// Addresses put in host candidates instead of `udp_addr`'s IP (NAT,
    /// containers: the public IP). Default: `udp_addr`'s IP, which must then
    /// not be unspecified (`0.0.0.0`). Mixing IPv4 and IPv6 advertises both
    /// families; otherwise only the one configured.
    pub fn with_advertised_ips(mut self, ips: Vec<IpAddr>) -> Self {
        self.advertised_ips = ips;
        self
    }

    /// Participants per room (default 100); a join beyond is `RoomFull`.
    pub fn with_max_participants(mut self, n: usize) -> Self {
        self.max_participants = n;
        self
    }

    /// Participants on this node (default 10 000); a join beyond is `NodeFull`.
    pub fn with_max_participants_total(mut self, n: usize) -> Self {
        self.max_participants_total = n;
        self
    }

    /// Tracks one participant may publish (default 8); more is `TooManyTracks`.
    pub fn with_max_tracks_per_participant(mut self, n: usize) -> Self {
        self.max_tracks_per_participant = n;
        self
    }

    /// Largest SDP accepted (default 64 KiB); larger is `BadSdp`.
    pub fn with_max_sdp_bytes(mut self, n: usize) -> Self {
        self.max_sdp_bytes = n;
        self
    }

    /// Time for ICE + DTLS to complete, from join (subscriber peer) and from
    /// each publish offer (publisher peer); past it the participant is removed
    /// with [`crate::LeaveReason::IceTimeout`]. Default 20 s.
    pub fn with_connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// A connected participant from whom nothing arrived for this long is
    /// removed with [`crate::LeaveReason::Vanished`]. Browsers send STUN
    /// consent checks every ~5 s even when silent, so keep it above 10 s in
    /// production. Default 30 s.
    pub fn with_idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// Period of [`crate::MediaEvent::Stats`] and quality checks. Default 2 s.
    pub fn with_stats_interval(mut self, d: Duration) -> Self {
        self.stats_interval = d;
        self
    }

    /// At most one keyframe request per publisher track and layer per this
    /// interval (default 500 ms).
    pub fn with_keyframe_min_interval(mut self, d: Duration) -> Self {
        self.keyframe_min_interval = d;
        self
    }

    /// Period of active-speaker evaluation (default 500 ms).
    pub fn with_speaker_interval(mut self, d: Duration) -> Self {
        self.speaker_interval = d;
        self
    }

    /// Starting bandwidth estimate of subscriber peers, bits/s (default 1.5 Mbit/s).
    pub fn with_initial_bandwidth(mut self, bps: u64) -> Self {
        self.initial_bandwidth_bps = bps;
        self
    }

    /// Let the subscriber's bandwidth estimate lower the simulcast layer
    /// (default true). Off: only [`crate::SubscriptionPrefs`] decides.
    pub fn with_bandwidth_layer_selection(mut self, on: bool) -> Self {
        self.bandwidth_layer_selection = on;
        self
    }

    /// Events buffered for a slow consumer before droppable ones (stats,
    /// quality, speakers) are dropped (default 4096).
    pub fn with_event_queue(mut self, n: usize) -> Self {
        self.event_queue = n;
        self
    }

    /// The IPs put into host candidates.
    pub fn candidate_ips(&self) -> Vec<IpAddr> {
        if self.advertised_ips.is_empty() {
            vec![self.udp_addr.ip()]
        } else {
            self.advertised_ips.clone()
        }
    }

    /// Checks possible before binding (limits; candidates are checked by
    /// [`crate::SfuCore::new`] once the bound address is known).
    pub(crate) fn validate_addr(&self) -> Result<(), MediaError> {
        let mut c = self.clone();
        if c.advertised_ips.is_empty() {
            c.udp_addr = SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0);
        }
        c.validate()
    }

    pub(crate) fn validate(&self) -> Result<(), MediaError> {
        let bad = |s: &str| Err(MediaError::Config(s.to_owned()));
        if self.candidate_ips().iter().any(|ip| ip.is_unspecified()) {
            return bad("udp_addr is unspecified (0.0.0.0 / ::): set advertised_ips");
        }
        if self.max_participants == 0 || self.max_participants_total == 0 {
            return bad("max_participants must be at least 1");
        }
        if self.max_tracks_per_participant == 0 {
            return bad("max_tracks_per_participant must be at least 1");
        }
        if self.max_sdp_bytes < 256 {
            return bad("max_sdp_bytes must be at least 256");
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("stats_interval", self.stats_interval),
            ("speaker_interval", self.speaker_interval),
        ] {
            if d < Duration::from_millis(10) {
                return Err(MediaError::Config(format!("{name} must be at least 10ms")));
            }
        }
        if self.event_queue == 0 {
            return bad("event_queue must be at least 1");
        }
        Ok(())
    }
}
