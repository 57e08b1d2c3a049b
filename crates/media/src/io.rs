//! [`Sfu`]: the async handle. One tokio task owns the UDP socket and the
//! [`SfuCore`]; handles talk to it through a channel.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::config::MediaConfig;
use crate::core::{Counts, SfuCore};
use crate::error::MediaError;
use crate::types::*;

type Reply<T> = oneshot::Sender<Result<T, MediaError>>;

enum Command {
    Join(RoomId, ParticipantId, Permissions, Reply<JoinInfo>),
    Publish(RoomId, ParticipantId, PublishOffer, Reply<String>),
    Answer(RoomId, ParticipantId, String, Reply<()>),
    Mute(RoomId, ParticipantId, TrackId, bool, Reply<()>),
    Subscribe(RoomId, ParticipantId, TrackId, SubscriptionPrefs, Reply<()>),
    Leave(RoomId, ParticipantId, Reply<()>),
    Tracks(RoomId, Reply<Vec<TrackInfo>>),
    Counts(Reply<Counts>),
    Shutdown,
}

/// Handle to a running media node: cheap to clone, every method is a
/// message to the task that owns the socket and all peers. The task stops
/// when [`Sfu::shutdown`] is called or every handle is dropped.
///
/// ```no_run
/// # async fn example() -> Result<(), switchboard_media::MediaError> {
/// use switchboard_media::*;
/// let (sfu, mut events) = Sfu::start(MediaConfig::new("127.0.0.1:0".parse().unwrap())).await?;
/// let info = sfu.join("room".into(), "alice".into(), Permissions::ALL).await?;
/// // send info.subscriber_offer to alice, get her answer:
/// # let answer = String::new(); let offer = String::new();
/// sfu.subscriber_answer("room".into(), "alice".into(), answer).await?;
/// // alice offers to publish:
/// let answer = sfu.publish_offer("room".into(), "alice".into(), PublishOffer::new(offer)).await?;
/// while let Some(ev) = events.recv().await {
///     // SubscriberOffer → push to the client; others → room state, logs.
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Sfu {
    tx: mpsc::Sender<Command>,
    local_addr: SocketAddr,
    candidates: Vec<SocketAddr>,
}

impl Sfu {
    /// Bind `udp_addr`, spawn the media task and return the handle and the
    /// event stream (one consumer). Must be called inside a tokio runtime.
    pub async fn start(cfg: MediaConfig) -> Result<(Sfu, mpsc::Receiver<MediaEvent>), MediaError> {
        cfg.validate_addr()?;
        let socket = UdpSocket::bind(cfg.udp_addr)
            .await
            .map_err(|e| MediaError::Io(format!("bind {}: {e}", cfg.udp_addr)))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| MediaError::Io(e.to_string()))?;
        let queue = cfg.event_queue;
        let core = SfuCore::new(cfg, local_addr, Instant::now())?;
        let candidates = core.candidates().to_vec();
        let (tx, rx) = mpsc::channel(1024);
        let (ev_tx, ev_rx) = mpsc::channel(queue);
        tokio::spawn(run(core, socket, rx, ev_tx, queue));
        Ok((
            Sfu {
                tx,
                local_addr,
                candidates,
            },
            ev_rx,
        ))
    }

    /// The bound UDP address (open this port, UDP, to clients).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Host candidates in every SDP.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.candidates
    }

    async fn call<T>(&self, f: impl FnOnce(Reply<T>) -> Command) -> Result<T, MediaError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(f(tx)).await.map_err(|_| MediaError::Stopped)?;
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    /// Join `room` (created on first join). Returns the first subscriber
    /// offer for the client; see [`JoinInfo`].
    pub async fn join(
        &self,
        room: RoomId,
        participant: ParticipantId,
        perms: Permissions,
    ) -> Result<JoinInfo, MediaError> {
        self.call(|r| Command::Join(room, participant, perms, r))
            .await
    }

    /// The client's publisher peer offers (first time or renegotiation);
    /// returns the SDP answer.
    pub async fn publish_offer(
        &self,
        room: RoomId,
        participant: ParticipantId,
        offer: PublishOffer,
    ) -> Result<String, MediaError> {
        self.call(|r| Command::Publish(room, participant, offer, r))
            .await
    }

    /// The client's answer to the outstanding subscriber offer.
    pub async fn subscriber_answer(
        &self,
        room: RoomId,
        participant: ParticipantId,
        answer_sdp: String,
    ) -> Result<(), MediaError> {
        self.call(|r| Command::Answer(room, participant, answer_sdp, r))
            .await
    }

    /// Mute or unmute one of `participant`'s published tracks.
    pub async fn set_muted(
        &self,
        room: RoomId,
        participant: ParticipantId,
        track: TrackId,
        muted: bool,
    ) -> Result<(), MediaError> {
        self.call(|r| Command::Mute(room, participant, track, muted, r))
            .await
    }

    /// How `participant` receives `track` (layer, size, paused).
    pub async fn set_subscription(
        &self,
        room: RoomId,
        participant: ParticipantId,
        track: TrackId,
        prefs: SubscriptionPrefs,
    ) -> Result<(), MediaError> {
        self.call(|r| Command::Subscribe(room, participant, track, prefs, r))
            .await
    }

    /// Remove `participant` ([`LeaveReason::Left`]).
    pub async fn leave(&self, room: RoomId, participant: ParticipantId) -> Result<(), MediaError> {
        self.call(|r| Command::Leave(room, participant, r)).await
    }

    /// Tracks published in `room`.
    pub async fn tracks(&self, room: RoomId) -> Result<Vec<TrackInfo>, MediaError> {
        self.call(|r| Command::Tracks(room, r)).await
    }

    /// Rooms, participants, peers and packet counters.
    pub async fn counts(&self) -> Result<Counts, MediaError> {
        self.call(Command::Counts).await
    }

    /// Stop the media task (all peers are dropped without events).
    pub async fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown).await;
    }
}

async fn run(
    mut core: SfuCore,
    socket: UdpSocket,
    mut rx: mpsc::Receiver<Command>,
    ev_tx: mpsc::Sender<MediaEvent>,
    queue: usize,
) {
    let mut buf = vec![0u8; 2048];
    let mut outbox: VecDeque<MediaEvent> = VecDeque::new();
    let mut dropped_events: u64 = 0;
    loop {
        while let Some(t) = core.poll_transmit() {
            // Send errors (ICMP unreachable, buffer full) lose one datagram;
            // RTP/RTCP/ICE recover from that.
            let _ = socket.send_to(&t.contents, t.destination).await;
        }
        while let Some(e) = core.poll_event() {
            outbox.push_back(e);
        }
        while let Some(e) = outbox.pop_front() {
            match ev_tx.try_send(e) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(e)) => {
                    outbox.push_front(e);
                    break;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    outbox.clear();
                    break;
                }
            }
        }
        if outbox.len() > queue {
            let before = outbox.len();
            outbox.retain(|e| !e.is_droppable());
            dropped_events += (before - outbox.len()) as u64;
            tracing::warn!(dropped_events, "media event consumer is slow");
        }
        let deadline = tokio::time::Instant::from_std(core.poll_timeout());
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                if !handle(&mut core, cmd) {
                    break;
                }
            }
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    core.handle_receive(Instant::now(), from, &buf[..n]);
                    // Drain what else is ready before going round.
                    for _ in 0..64 {
                        match socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => {
                                core.handle_receive(Instant::now(), from, &buf[..n]);
                            }
                            Err(_) => break,
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                core.handle_timeout(Instant::now());
            }
            permit = ev_tx.reserve(), if !outbox.is_empty() => {
                if let (Ok(p), Some(e)) = (permit, outbox.pop_front()) {
                    p.send(e);
                }
            }
        }
        let now = Instant::now();
        if now >= core.poll_timeout() {
            core.handle_timeout(now);
        }
    }
}

/// Apply one command; false means stop.
fn handle(core: &mut SfuCore, cmd: Command) -> bool {
    let now = Instant::now();
    match cmd {
        Command::Join(room, p, perms, r) => {
            let _ = r.send(core.join(now, room, p, perms));
        }
        Command::Publish(room, p, offer, r) => {
            let _ = r.send(core.publish_offer(now, &room, &p, offer));
        }
        Command::Answer(room, p, sdp, r) => {
            let _ = r.send(core.subscriber_answer(now, &room, &p, &sdp));
        }
        Command::Mute(room, p, t, m, r) => {
            let _ = r.send(core.set_muted(now, &room, &p, &t, m));
        }
        Command::Subscribe(room, p, t, prefs, r) => {
            let _ = r.send(core.set_subscription(now, &room, &p, &t, prefs));
        }
        Command::Leave(room, p, r) => {
            let _ = r.send(core.leave(now, &room, &p));
        }
        Command::Tracks(room, r) => {
            let _ = r.send(Ok(core.tracks(&room)));
        }
        Command::Counts(r) => {
            let _ = r.send(Ok(core.counts()));
        }
        Command::Shutdown => return false,
    }
    true
}
