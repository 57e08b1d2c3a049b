//! Switchboard's SFU: WebRTC media forwarding on [str0m], one UDP port per
//! media node.
//!
//! # Model
//!
//! Every participant of a room has up to two str0m peers on the SFU:
//!
//! * a **subscriber** peer, created at [`Sfu::join`]: the SFU offers, the
//!   client answers. It carries a data channel (so it connects even with
//!   nothing to receive) and one send-only m-line per track of the other
//!   participants. When tracks come and go the SFU makes a new offer
//!   ([`MediaEvent::SubscriberOffer`]); at most one is outstanding.
//! * a **publisher** peer, created by the client's first offer
//!   ([`Sfu::publish_offer`]): the client offers, the SFU answers.
//!
//! Offers on each peer go one way only, so renegotiations never collide.
//! The SFU is ICE-lite with host candidates from [`MediaConfig`]; all peers
//! share one UDP socket and each datagram goes to the peer that
//! [`str0m::Rtc::accepts`] it. DTLS-SRTP always.
//!
//! Media is forwarded frame by frame without transcoding: Opus, VP8, VP9 and
//! H.264. Simulcast publishers send up to three layers by `rid`; each
//! subscriber gets one, chosen from its [`SubscriptionPrefs`] and its TWCC
//! bandwidth estimate; a switch waits for a keyframe of the new layer, which
//! is requested (PLI). Subscribers' PLI/FIR go to the publisher, at most one
//! per track and layer per 500 ms. NACK/RTX are per leg (str0m).
//!
//! # Driving contract
//!
//! [`SfuCore`] is sans-IO: make one change (a signaling call,
//! [`SfuCore::handle_receive`], [`SfuCore::handle_timeout`]), then drain
//! [`SfuCore::poll_transmit`] and [`SfuCore::poll_event`] and sleep until
//! [`SfuCore::poll_timeout`]. Time is always an argument. [`Sfu`] is the
//! thin tokio pump around it: one task owns the socket and the core, and
//! the cheap-clone handle sends it commands.
//!
//! ```text
//!  signaling ──join/publish_offer/answer/mute/subscribe/leave──▶ Sfu (handle)
//!      ▲                                                          │ mpsc
//!      └──────────── MediaEvent (offers, tracks, left, …) ◀── media task
//!                                                                 │
//!                               UdpSocket ◀── Transmit ── SfuCore ◀── datagrams, time
//! ```
//!
//! # Signaling sequence (what the gateway does)
//!
//! 1. `join(room, participant, permissions)` → [`JoinInfo`]: send the
//!    `subscriber_offer` to the client; the client's answer goes to
//!    [`Sfu::subscriber_answer`].
//! 2. To publish, the client offers on its publisher peer:
//!    [`Sfu::publish_offer`] returns the answer. Each sending m-line becomes
//!    a track ([`MediaEvent::TrackPublished`]) and every other participant
//!    gets a [`MediaEvent::SubscriberOffer`] to push and answer.
//! 3. [`Sfu::set_muted`], [`Sfu::set_subscription`] never renegotiate.
//! 4. [`Sfu::leave`], or the SFU removes the participant itself
//!    ([`MediaEvent::ParticipantLeft`] with [`LeaveReason::IceTimeout`] or
//!    [`LeaveReason::Vanished`]).
//!
//! Peer input never panics: bad SDP, codecs, limits and permissions are
//! [`MediaError`]s; garbage datagrams are counted and dropped.
//!
//! [str0m]: https://docs.rs/str0m

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
pub mod core;
mod error;
mod io;
mod sdp;
mod types;

pub use crate::config::MediaConfig;
pub use crate::core::{Counts, SfuCore, Transmit};
pub use crate::error::{MediaError, PermissionKind};
pub use crate::io::Sfu;
pub use crate::types::*;
