//! The per-connection background task: reads frames, answers pings, routes
//! replies to waiting calls and pushes to [`crate::Events`], writes commands.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use switchboard_proto::Encoding;
use switchboard_proto::client::{ConnectResult, Reply};
use switchboard_proto::codec;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;

use crate::ClientError;
use crate::event::{Event, EventHandler};
use crate::transport::{WsStream, close_frame, close_parts, data_message};

/// How long a closing side waits for the peer's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// At most this many queued commands are written before one flush.
const WRITE_BATCH: usize = 64;

/// State shared by the [`crate::Client`] handles, the [`crate::Events`]
/// receiver and the connection task.
#[derive(Debug)]
pub(crate) struct Shared {
    next_id: AtomicU32,
    termination: OnceLock<ClientError>,
    pub connect: ConnectResult,
    pub encoding: Encoding,
}

impl Shared {
    pub(crate) fn new(connect: ConnectResult, encoding: Encoding, first_id: u32) -> Shared {
        Shared {
            next_id: AtomicU32::new(first_id),
            termination: OnceLock::new(),
            connect,
            encoding,
        }
    }

    /// A fresh non-zero command id.
    pub(crate) fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Why the connection ended (a generic transport error while it has not).
    pub(crate) fn termination(&self) -> ClientError {
        self.termination
            .get()
            .cloned()
            .unwrap_or_else(|| ClientError::Transport("connection closed".into()))
    }
}

/// A waiting call's reply slot.
pub(crate) type ReplySlot = oneshot::Sender<Result<Reply, ClientError>>;

/// What the client handles ask the task to do.
pub(crate) enum Outgoing {
    /// Write a command and route the reply with `id` to `reply`.
    Call {
        id: u32,
        frame: Message,
        reply: ReplySlot,
    },
    /// Write a frame that expects no reply (`send`, raw frames).
    Send(Message),
    /// Close the connection with this frame; signal `done` once closed.
    Close {
        frame: CloseFrame,
        done: oneshot::Sender<()>,
    },
}

/// One decoded server message, in compact form (a [`Reply`] is large; pushes
/// are converted to [`Event`]s right away so a many-message frame waiting in
/// the backlog stays small).
enum Item {
    /// A reply to a command.
    Reply(Box<Reply>),
    /// A push.
    Event(Event),
    /// A server ping.
    Ping,
}

impl Item {
    /// `None` for messages that mean nothing to a client (no id, no push,
    /// but not empty either).
    fn from_reply(mut reply: Reply) -> Option<Item> {
        if reply.id != 0 {
            Some(Item::Reply(Box::new(reply)))
        } else if let Some(push) = reply.push.take() {
            Some(Item::Event(Event::from_push(push)))
        } else if reply.is_ping() {
            Some(Item::Ping)
        } else {
            tracing::debug!("ignoring a reply without id or push");
            None
        }
    }
}

/// Backlogs larger than this are shrunk once drained.
const BACKLOG_KEEP: usize = 16;

/// Task parameters.
pub(crate) struct TaskParams {
    /// Answer server pings with pongs (`pong: true` in the connect result).
    pub pong: bool,
    /// Close the connection when nothing was read for this long
    /// (server ping interval + allowed delay); `None` disables the check.
    pub read_timeout: Option<Duration>,
    /// Deliver pushes to this callback instead of the events queue.
    pub handler: Option<EventHandler>,
}

/// Runs the connection until it ends. `backlog` holds replies read before the
/// task started (those that followed the connect reply in its frame).
pub(crate) async fn run(
    mut ws: WsStream,
    shared: Arc<Shared>,
    mut commands: mpsc::Receiver<Outgoing>,
    events: mpsc::Sender<Event>,
    backlog: Vec<Reply>,
    params: TaskParams,
) {
    let enc = shared.encoding;
    let mut pending: HashMap<u32, ReplySlot> = HashMap::new();
    let mut sweep_at = 64usize;
    let mut backlog: VecDeque<Item> = backlog.into_iter().filter_map(Item::from_reply).collect();
    // A push that did not fit in the events queue; reading is paused while set.
    let mut stalled: Option<Event> = None;
    let mut close_done: Option<oneshot::Sender<()>> = None;
    let mut last_read = Instant::now();
    let read_timeout = params.read_timeout.unwrap_or(Duration::from_secs(3600));
    let watchdog = tokio::time::sleep(read_timeout);
    tokio::pin!(watchdog);

    let end: ClientError = 'conn: loop {
        if stalled.is_none() {
            let drained = drain(
                &mut backlog,
                &mut stalled,
                &mut pending,
                &events,
                &mut ws,
                enc,
                &params,
            );
            if let Err(e) = drained.await {
                break e;
            }
        }
        tokio::select! {
            biased;
            out = commands.recv() => {
                let first = match out {
                    None => break close(&mut ws, close_frame(1000, "client dropped")).await,
                    Some(out) => out,
                };
                let mut next = Some(first);
                let mut written = 0;
                while let Some(out) = next.take() {
                    match out {
                        Outgoing::Call { id, frame, reply } => {
                            if reply.is_closed() {
                                // The caller gave up (timeout) before we got to it.
                            } else {
                                pending.insert(id, reply);
                                if let Err(e) = ws.feed(frame).await {
                                    break 'conn ClientError::transport(e);
                                }
                            }
                        }
                        Outgoing::Send(frame) => {
                            if let Err(e) = ws.feed(frame).await {
                                break 'conn ClientError::transport(e);
                            }
                        }
                        Outgoing::Close { frame, done } => {
                            close_done = Some(done);
                            break 'conn close(&mut ws, frame).await;
                        }
                    }
                    written += 1;
                    if written < WRITE_BATCH {
                        next = commands.try_recv().ok();
                    }
                }
                if let Err(e) = ws.flush().await {
                    break ClientError::transport(e);
                }
                if pending.len() > sweep_at {
                    // Forget calls whose callers timed out and whose replies never came.
                    pending.retain(|_, slot| !slot.is_closed());
                    sweep_at = (pending.len() * 2).max(64);
                }
            }
            permit = events.reserve(), if stalled.is_some() => {
                if let (Ok(permit), Some(event)) = (permit, stalled.take()) {
                    permit.send(event);
                }
                // Err: the Events receiver is gone; the push is dropped.
            }
            msg = ws.next(), if stalled.is_none() => {
                last_read = Instant::now();
                let frame = match msg {
                    Some(Ok(Message::Text(text))) => text.into(),
                    Some(Ok(Message::Binary(bytes))) => bytes,
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = close_parts(frame);
                        finish_close(&mut ws).await;
                        break ClientError::Disconnected { code, reason };
                    }
                    Some(Ok(_)) => continue, // WebSocket ping/pong: handled by tungstenite.
                    Some(Err(e)) => break ClientError::transport(e),
                    None => break ClientError::Transport("connection closed without a close frame".into()),
                };
                match codec::decode_replies(enc, &frame) {
                    Ok(replies) => {
                        // The previous backlog is fully drained here (not stalled).
                        if backlog.capacity() > BACKLOG_KEEP.max(replies.len()) {
                            backlog.shrink_to(BACKLOG_KEEP);
                        }
                        backlog.extend(replies.into_iter().filter_map(Item::from_reply));
                    }
                    Err(e) => {
                        let err = ClientError::Decode(format!("server frame: {e}"));
                        let _ = close(&mut ws, close_frame(1002, "malformed frame")).await;
                        break err;
                    }
                }
            }
            () = &mut watchdog, if params.read_timeout.is_some() => {
                if stalled.is_none() && last_read.elapsed() >= read_timeout {
                    let _ = close(&mut ws, close_frame(1000, "no ping")).await;
                    break ClientError::Transport(format!(
                        "nothing received from the server for {read_timeout:?} (no ping)"
                    ));
                }
                let base = if stalled.is_some() { Instant::now() } else { last_read };
                watchdog.as_mut().reset(base + read_timeout);
            }
        }
    };

    let _ = shared.termination.set(end.clone());
    for (_, slot) in pending.drain() {
        let _ = slot.send(Err(end.clone()));
    }
    // Calls still queued fail when their slots drop with the receiver.
    drop(commands);
    drop(events);
    if let Some(handler) = &params.handler {
        handler.call(Event::from_termination(&end));
    }
    if let Some(done) = close_done {
        let _ = done.send(());
    }
}

/// Routes the backlog of decoded replies until it is empty or a push does not
/// fit in the events queue (then it is parked in `stalled`).
async fn drain(
    backlog: &mut VecDeque<Item>,
    stalled: &mut Option<Event>,
    pending: &mut HashMap<u32, ReplySlot>,
    events: &mpsc::Sender<Event>,
    ws: &mut WsStream,
    enc: Encoding,
    params: &TaskParams,
) -> Result<(), ClientError> {
    while let Some(item) = backlog.pop_front() {
        match item {
            Item::Reply(reply) => {
                if let Some(slot) = pending.remove(&reply.id) {
                    let _ = slot.send(Ok(*reply));
                } else {
                    tracing::debug!(id = reply.id, "reply to an unknown or abandoned command");
                }
            }
            Item::Ping => {
                if params.pong {
                    let pong = data_message(enc, codec::pong_frame(enc));
                    ws.send(pong).await.map_err(ClientError::transport)?;
                }
            }
            Item::Event(event) if let Some(handler) = &params.handler => handler.call(event),
            Item::Event(event) => match events.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(event)) => {
                    *stalled = Some(event);
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            },
        }
    }
    Ok(())
}

/// Sends a close frame and waits (bounded) for the peer's. Returns the
/// resulting termination: the peer's close code/reason, or ours if it did not
/// answer.
async fn close(ws: &mut WsStream, frame: CloseFrame) -> ClientError {
    let ours = close_parts(Some(frame.clone()));
    let theirs = tokio::time::timeout(CLOSE_WAIT, async {
        ws.close(Some(frame)).await.ok()?;
        while let Some(msg) = ws.next().await {
            match msg {
                Ok(Message::Close(frame)) => return Some(close_parts(frame)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let (code, reason) = theirs.unwrap_or(ours);
    ClientError::Disconnected { code, reason }
}

/// Completes a close handshake started by the server (flushes our echo).
async fn finish_close(ws: &mut WsStream) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}
