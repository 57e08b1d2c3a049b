//! The WebSocket transports: bidirectional (`/connection/websocket`) and
//! unidirectional (`/connection/uni_websocket`), both thin [`Transport`]s
//! driven by [`transport::drive`].
//!
//! The gateway does the RFC 6455 handshake and framing itself
//! ([`crate::wsframe`]) on the upgraded HTTP connection, so that an idle
//! connection costs no buffer: a read lands in a buffer on the stack, and
//! only the unfinished part of a frame is kept on the heap (and freed once
//! the frame is complete); a batch of queued frames goes out as one vectored
//! write of a WebSocket header and the frames' own bytes, without copying them
//! into a write buffer.

use crate::Shared;
use crate::session::Session;
use crate::transport::{self, Inbound, Transport};
use crate::wsframe::{self, FrameError, Header, OpCode};
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{Buf, Bytes};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use switchboard_proto::codec::Encoding;
use switchboard_proto::codes::Disconnect;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const PROTOBUF_SUBPROTOCOL: &str = "centrifuge-protobuf";
const JSON_SUBPROTOCOL: &str = "centrifuge-json";

/// Size of the on-stack buffer one read fills.
const SCRATCH: usize = 8 * 1024;
/// Most slices one vectored write passes.
const MAX_SLICES: usize = 64;
/// How long a closing write may wait for a client that does not read.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/connection/websocket", get(upgrade))
        .route("/connection/uni_websocket", get(upgrade_uni))
        .with_state(shared)
}

/// Whether a new connection from `peer` is refused, and with which code.
pub(crate) fn refusal(shared: &Shared, peer: &SocketAddr) -> Option<Disconnect> {
    if shared.draining.load(Ordering::SeqCst) {
        return Some(Disconnect::SHUTDOWN);
    }
    if shared.ip_limiter.check_key(&peer.ip()).is_err() {
        metrics::counter!("switchboard_connections_refused_total", "reason" => "rate_limited")
            .increment(1);
        return Some(Disconnect::TOO_MANY_REQUESTS);
    }
    None
}

/// Largest message payload read from a client (the session then applies
/// `max_frame_bytes` with its own error).
fn max_payload(shared: &Shared) -> usize {
    shared.config.max_frame_bytes.saturating_mul(2).max(1024)
}

/// Whether a header lists `token` (comma-separated, case-insensitive).
fn header_has(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks the opening handshake; returns the accept key and the chosen
/// subprotocol (protobuf preferred), or why it is refused (400).
fn handshake(
    headers: &HeaderMap,
    negotiate: bool,
) -> Result<(String, Option<&'static str>), &'static str> {
    if !header_has(headers, header::CONNECTION, "upgrade") {
        return Err("Connection header did not include 'upgrade'");
    }
    if !header_has(headers, header::UPGRADE, "websocket") {
        return Err("`Upgrade` header did not include 'websocket'");
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err("`Sec-WebSocket-Version` header did not include '13'");
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err("`Sec-WebSocket-Key` header missing");
    };
    let protocol = if !negotiate {
        None
    } else if header_has(
        headers,
        header::SEC_WEBSOCKET_PROTOCOL,
        PROTOBUF_SUBPROTOCOL,
    ) {
        Some(PROTOBUF_SUBPROTOCOL)
    } else if header_has(headers, header::SEC_WEBSOCKET_PROTOCOL, JSON_SUBPROTOCOL) {
        Some(JSON_SUBPROTOCOL)
    } else {
        None
    };
    Ok((wsframe::accept_key(key.as_bytes()), protocol))
}

/// Answers the handshake with 101 and runs the connection on its own task
/// once the HTTP connection is upgraded.
fn accept(
    shared: Arc<Shared>,
    peer: SocketAddr,
    mut req: Request,
    encoding: Encoding,
    unidirectional: bool,
    initial: Option<Bytes>,
) -> Response {
    let (accept, protocol) = match handshake(req.headers(), !unidirectional) {
        Ok(h) => h,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let encoding = match protocol {
        Some(PROTOBUF_SUBPROTOCOL) => Encoding::Protobuf,
        Some(_) => Encoding::Json,
        None => encoding,
    };
    if req
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return (StatusCode::UPGRADE_REQUIRED, "connection is not upgradable").into_response();
    }
    let refused = refusal(&shared, &peer);
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        let t = WsTransport::new(
            TokioIo::new(upgraded),
            encoding,
            unidirectional,
            max_payload(&shared),
        );
        if let Some(d) = refused {
            transport::count_disconnect(Some(&d));
            t.close(Some(d)).await;
            return;
        }
        let conn = crate::new_conn(&shared, encoding, unidirectional);
        let mut session = Session::new(shared.clone(), conn, Instant::now());
        if unidirectional {
            session.set_session_id(uuid::Uuid::new_v4().to_string());
        }
        transport::drive(session, t, initial).await
    });
    let mut resp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = protocol {
        resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp.body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let encoding = match query
        .get("cf_protocol")
        .or(query.get("format"))
        .map(String::as_str)
    {
        Some("protobuf") => Encoding::Protobuf,
        _ => Encoding::Json,
    };
    accept(shared, peer, req, encoding, false, None)
}

/// Unidirectional WebSocket: the connect request comes as the first message
/// (or in the `cf_connect` query parameter); pushes go out as JSON text
/// messages; later client messages are ignored.
async fn upgrade_uni(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let initial = query.get("cf_connect").map(|c| Bytes::from(c.clone()));
    accept(shared, peer, req, Encoding::Json, true, initial)
}

/// The server end of one WebSocket connection over any byte stream.
struct WsTransport<S> {
    io: S,
    encoding: Encoding,
    unidirectional: bool,
    max_payload: usize,
    /// Bytes read but not yet parsed: only ever the start of an unfinished
    /// frame (or frames that arrived together); empty, and unallocated,
    /// between messages.
    buf: Vec<u8>,
    /// A fragmented message being assembled: whether it is text, and the
    /// payload so far.
    fragments: Option<(bool, Vec<u8>)>,
    /// Bytes to write, in order (frames, pongs, close); kept here so that a
    /// cancelled receive that was writing a pong loses nothing.
    out: VecDeque<Bytes>,
    /// The client sent a close frame (its echo is queued).
    peer_closed: bool,
}

/// What one complete client frame means for the driver.
enum Step {
    /// Nothing for the driver (a control frame, part of a message).
    Continue,
    /// Hand this to the driver.
    Yield(Inbound),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> WsTransport<S> {
    fn new(io: S, encoding: Encoding, unidirectional: bool, max_payload: usize) -> Self {
        Self {
            io,
            encoding,
            unidirectional,
            max_payload,
            buf: Vec::new(),
            fragments: None,
            out: VecDeque::new(),
            peer_closed: false,
        }
    }

    fn data_opcode(&self) -> OpCode {
        match self.encoding {
            Encoding::Protobuf => OpCode::Binary,
            Encoding::Json => OpCode::Text,
        }
    }

    /// Queues one message made of `parts` (concatenated, `sep` between them).
    fn queue_message(&mut self, opcode: OpCode, parts: Vec<Bytes>, sep: Option<&'static [u8]>) {
        let seps = sep.map_or(0, |s| s.len() * parts.len().saturating_sub(1));
        let len = parts.iter().map(Bytes::len).sum::<usize>() + seps;
        let mut head = [0u8; 10];
        let n = wsframe::encode_header(opcode, len, &mut head);
        self.out.push_back(Bytes::copy_from_slice(&head[..n]));
        for (i, p) in parts.into_iter().enumerate() {
            if i > 0
                && let Some(s) = sep
            {
                self.out.push_back(Bytes::from_static(s));
            }
            if !p.is_empty() {
                self.out.push_back(p);
            }
        }
    }

    /// Writes everything queued.
    fn poll_flush_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let k = self.out.len().min(MAX_SLICES);
            for (slot, b) in slices.iter_mut().zip(self.out.iter()) {
                *slot = IoSlice::new(b);
            }
            let mut n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..k]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while n > 0 {
                let front = self.out.front_mut().expect("written bytes were queued");
                if front.len() <= n {
                    n -= front.len();
                    self.out.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        // A large batch leaves a large queue behind: give it back.
        if self.out.capacity() > MAX_SLICES {
            self.out = VecDeque::new();
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    async fn flush_out(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush_out(cx)).await
    }

    /// Acts on one complete frame whose payload is unmasked.
    fn on_frame(&mut self, h: Header, payload: Bytes) -> Step {
        match h.opcode {
            OpCode::Ping => {
                let pong = wsframe::encode_frame(OpCode::Pong, &payload);
                self.out.push_back(Bytes::from(pong));
                Step::Continue
            }
            OpCode::Pong => Step::Continue,
            OpCode::Close => {
                // Echo the code (RFC 6455 §5.5.1), then report the end.
                let code = payload.get(..2).unwrap_or_default();
                let close = wsframe::encode_frame(OpCode::Close, code);
                self.out.push_back(Bytes::from(close));
                self.peer_closed = true;
                Step::Continue
            }
            OpCode::Text | OpCode::Binary => {
                let text = h.opcode == OpCode::Text;
                if self.fragments.is_some() {
                    return protocol_error("new message inside a fragmented one");
                }
                if h.fin {
                    return message(text, payload);
                }
                self.fragments = Some((text, payload.to_vec()));
                Step::Continue
            }
            OpCode::Continuation => {
                let Some((text, mut acc)) = self.fragments.take() else {
                    return protocol_error("continuation without a message");
                };
                if acc.len() + payload.len() > self.max_payload {
                    return Step::Yield(too_large());
                }
                acc.extend_from_slice(&payload);
                if h.fin {
                    return message(text, Bytes::from(acc));
                }
                self.fragments = Some((text, acc));
                Step::Continue
            }
        }
    }

    /// Takes the first complete frame out of `buf`, if there is one.
    fn frame_from_buf(&mut self) -> Result<Option<(Header, Bytes)>, FrameError> {
        let Some(h) = wsframe::parse_header(&self.buf, self.max_payload)? else {
            return Ok(None);
        };
        let end = h.frame_len();
        if self.buf.len() < end {
            return Ok(None);
        }
        wsframe::apply_mask(&mut self.buf[h.header_len..end], h.mask);
        let payload = if end == self.buf.len() && end > SCRATCH {
            // A large frame alone in the buffer: hand the buffer over.
            Bytes::from(std::mem::take(&mut self.buf)).slice(h.header_len..)
        } else {
            let p = Bytes::copy_from_slice(&self.buf[h.header_len..end]);
            self.buf.drain(..end);
            p
        };
        if self.buf.is_empty() {
            // Between messages an idle connection keeps no read buffer.
            self.buf = Vec::new();
        }
        Ok(Some((h, payload)))
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Inbound> {
        loop {
            if !self.out.is_empty() && ready!(self.poll_flush_out(cx)).is_err() {
                return Poll::Ready(Inbound::Closed);
            }
            if self.peer_closed {
                return Poll::Ready(Inbound::Closed);
            }
            // A frame already read?
            match self.frame_from_buf() {
                Ok(Some((h, payload))) => match self.on_frame(h, payload) {
                    Step::Yield(i) => return Poll::Ready(i),
                    Step::Continue => continue,
                },
                Ok(None) => {}
                Err(e) => return Poll::Ready(frame_error(e)),
            }
            if !self.buf.is_empty() {
                // The rest of an unfinished frame: read straight into the
                // heap buffer, sized to the whole frame once its header is in.
                let need = match wsframe::parse_header(&self.buf, self.max_payload) {
                    Ok(Some(h)) => h.frame_len(),
                    Ok(None) => self.buf.len() + wsframe::MAX_HEADER,
                    Err(e) => return Poll::Ready(frame_error(e)),
                };
                self.buf.reserve_exact(need.saturating_sub(self.buf.len()));
                let read = self.io.read_buf(&mut self.buf);
                match ready!(pin!(read).poll(cx)) {
                    Ok(0) | Err(_) => return Poll::Ready(Inbound::Closed),
                    Ok(_) => continue,
                }
            }
            // Nothing buffered: read into the stack.
            let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH];
            let mut rb = ReadBuf::uninit(&mut scratch);
            match ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => return Poll::Ready(Inbound::Closed),
                Ok(()) => {}
                Err(_) => return Poll::Ready(Inbound::Closed),
            }
            let data = rb.filled_mut();
            match wsframe::parse_header(data, self.max_payload) {
                Ok(Some(h)) if h.frame_len() <= data.len() => {
                    // The common case: a whole frame in one read.
                    let end = h.frame_len();
                    wsframe::apply_mask(&mut data[h.header_len..end], h.mask);
                    let payload = Bytes::copy_from_slice(&data[h.header_len..end]);
                    if end < data.len() {
                        self.buf.extend_from_slice(&data[end..]);
                    }
                    match self.on_frame(h, payload) {
                        Step::Yield(i) => return Poll::Ready(i),
                        Step::Continue => continue,
                    }
                }
                Ok(h) => {
                    let need = h.map_or(data.len(), |h| h.frame_len());
                    self.buf.reserve_exact(need);
                    self.buf.extend_from_slice(data);
                }
                Err(e) => return Poll::Ready(frame_error(e)),
            }
        }
    }
}

fn too_large() -> Inbound {
    Inbound::Fail(Disconnect::new(
        Disconnect::BAD_REQUEST.code,
        "frame too large",
    ))
}

fn protocol_error(why: &'static str) -> Step {
    tracing::debug!(error = why, "websocket protocol error");
    Step::Yield(Inbound::Closed)
}

fn frame_error(e: FrameError) -> Inbound {
    match e {
        FrameError::TooLarge => too_large(),
        FrameError::Protocol(why) => {
            tracing::debug!(error = why, "websocket protocol error");
            Inbound::Closed
        }
    }
}

/// A complete message: text must be UTF-8.
fn message(text: bool, payload: Bytes) -> Step {
    if text && std::str::from_utf8(&payload).is_err() {
        return protocol_error("text message is not UTF-8");
    }
    Step::Yield(Inbound::Frame(payload))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Transport for WsTransport<S> {
    async fn recv(&mut self) -> Inbound {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    async fn write(&mut self, frames: Vec<Bytes>) -> Result<(), ()> {
        let op = self.data_opcode();
        if self.unidirectional {
            // One push per message: plain WebSocket consumers parse each
            // message as one JSON object.
            for f in frames {
                self.queue_message(op, vec![f], None);
            }
        } else {
            // One message; the protocol separates JSON replies by newlines,
            // protobuf replies carry their own length prefix.
            let sep: Option<&'static [u8]> = match self.encoding {
                Encoding::Json => Some(b"\n"),
                Encoding::Protobuf => None,
            };
            self.queue_message(op, frames, sep);
        }
        self.flush_out().await.map_err(|_| ())
    }

    async fn close(mut self, disconnect: Option<Disconnect>) {
        if let Some(d) = disconnect {
            let payload = wsframe::close_payload(&d);
            let frame = wsframe::encode_frame(OpCode::Close, &payload);
            self.out.push_back(Bytes::from(frame));
        }
        if self.out.is_empty() {
            return;
        }
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
            self.flush_out().await?;
            tokio::io::AsyncWriteExt::shutdown(&mut self.io).await
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt as _, DuplexStream};

    fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut v = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => v.push(0x80 | n as u8),
            n if n <= 0xffff => {
                v.push(0x80 | 126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(0x80 | 127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(&mask);
        let mut p = payload.to_vec();
        wsframe::apply_mask(&mut p, mask);
        v.extend_from_slice(&p);
        v
    }

    fn pair(max: usize, enc: Encoding) -> (WsTransport<DuplexStream>, DuplexStream) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (WsTransport::new(a, enc, false, max), b)
    }

    /// Reads one unmasked server frame: (opcode bits, fin, payload).
    async fn server_frame(c: &mut DuplexStream) -> (u8, bool, Vec<u8>) {
        let mut h = [0u8; 2];
        c.read_exact(&mut h).await.unwrap();
        assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                c.read_exact(&mut l).await.unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                c.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut p = vec![0u8; len];
        c.read_exact(&mut p).await.unwrap();
        (h[0] & 0x0f, h[0] & 0x80 != 0, p)
    }

    fn frame_of(i: Inbound) -> Bytes {
        match i {
            Inbound::Frame(f) => f,
            Inbound::Closed => panic!("closed"),
            Inbound::Fail(d) => panic!("failed: {d:?}"),
        }
    }

    #[tokio::test]
    async fn small_frames_leave_no_read_buffer_behind() {
        let (mut t, mut c) = pair(1 << 16, Encoding::Json);
        c.write_all(&client_frame(1, true, b"{\"id\":1}"))
            .await
            .unwrap();
        assert_eq!(&frame_of(t.recv().await)[..], b"{\"id\":1}");
        assert_eq!(t.buf.capacity(), 0);
        // Two frames in one write arrive one by one, then nothing is kept.
        let mut two = client_frame(1, true, b"a");
        two.extend(client_frame(2, true, b"bc"));
        c.write_all(&two).await.unwrap();
        assert_eq!(&frame_of(t.recv().await)[..], b"a");
        assert_eq!(&frame_of(t.recv().await)[..], b"bc");
        assert_eq!(t.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_large_message_after_small_ones_arrives_intact_and_is_not_kept() {
        let (mut t, mut c) = pair(1 << 20, Encoding::Protobuf);
        c.write_all(&client_frame(2, true, b"x")).await.unwrap();
        assert_eq!(&frame_of(t.recv().await)[..], b"x");
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let frame = client_frame(2, true, &big);
        // Delivered in pieces, as a slow network would.
        let writer = tokio::spawn(async move {
            for piece in frame.chunks(7_000) {
                c.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
            c
        });
        assert_eq!(&frame_of(t.recv().await)[..], &big[..]);
        assert_eq!(t.buf.capacity(), 0, "the large read buffer is given back");
        let mut c = writer.await.unwrap();
        // And a small one after it still works.
        c.write_all(&client_frame(2, true, b"after")).await.unwrap();
        assert_eq!(&frame_of(t.recv().await)[..], b"after");
        assert_eq!(t.buf.capacity(), 0);
    }

    #[tokio::test]
    async fn fragmented_messages_are_joined() {
        let (mut t, mut c) = pair(1 << 16, Encoding::Json);
        let mut v = client_frame(1, false, b"{\"id\":");
        v.extend(client_frame(9, true, b"p")); // a ping in between
        v.extend(client_frame(0, false, b"4"));
        v.extend(client_frame(0, true, b"2}"));
        c.write_all(&v).await.unwrap();
        assert_eq!(&frame_of(t.recv().await)[..], b"{\"id\":42}");
        assert_eq!(server_frame(&mut c).await, (0xA, true, b"p".to_vec()));
    }

    #[tokio::test]
    async fn oversize_frames_and_messages_fail_as_too_large() {
        let (mut t, mut c) = pair(1024, Encoding::Json);
        c.write_all(&client_frame(1, true, &[b'x'; 1025]))
            .await
            .unwrap();
        match t.recv().await {
            Inbound::Fail(d) => {
                assert_eq!(d.code, Disconnect::BAD_REQUEST.code);
                assert_eq!(d.reason, "frame too large");
            }
            _ => panic!("expected a failure"),
        }
        let (mut t, mut c) = pair(1024, Encoding::Json);
        let mut v = client_frame(1, false, &[b'x'; 1000]);
        v.extend(client_frame(0, true, &[b'x'; 100]));
        c.write_all(&v).await.unwrap();
        assert!(matches!(t.recv().await, Inbound::Fail(d) if d.reason == "frame too large"));
    }

    #[tokio::test]
    async fn protocol_violations_and_close_end_the_connection() {
        // Unmasked client frame.
        let (mut t, mut c) = pair(1024, Encoding::Json);
        c.write_all(&[0x81, 0x01, b'x']).await.unwrap();
        assert!(matches!(t.recv().await, Inbound::Closed));
        // Invalid UTF-8 in a text message.
        let (mut t, mut c) = pair(1024, Encoding::Json);
        c.write_all(&client_frame(1, true, &[0xff, 0xfe]))
            .await
            .unwrap();
        assert!(matches!(t.recv().await, Inbound::Closed));
        // A close is echoed with its code.
        let (mut t, mut c) = pair(1024, Encoding::Json);
        c.write_all(&client_frame(8, true, &[0x03, 0xe8, b'b', b'y']))
            .await
            .unwrap();
        assert!(matches!(t.recv().await, Inbound::Closed));
        assert_eq!(server_frame(&mut c).await, (0x8, true, vec![0x03, 0xe8]));
        // The client going away.
        let (mut t, c) = pair(1024, Encoding::Json);
        drop(c);
        assert!(matches!(t.recv().await, Inbound::Closed));
    }

    #[tokio::test]
    async fn a_batch_is_one_message_and_uni_batches_are_one_message_each() {
        let (mut t, mut c) = pair(1024, Encoding::Json);
        let big = Bytes::from(vec![b'y'; 70_000]);
        t.write(vec![Bytes::from_static(b"{}"), big.clone()])
            .await
            .unwrap();
        let (op, fin, p) = server_frame(&mut c).await;
        assert_eq!((op, fin, p.len()), (1, true, 70_003));
        assert_eq!(&p[..3], b"{}\n");
        let (mut t, mut c) = pair(1024, Encoding::Protobuf);
        t.write(vec![
            Bytes::from_static(b"\x01a"),
            Bytes::from_static(b"\x01b"),
        ])
        .await
        .unwrap();
        assert_eq!(
            server_frame(&mut c).await,
            (2, true, b"\x01a\x01b".to_vec())
        );
        let (a, mut c) = tokio::io::duplex(1 << 16);
        let mut t = WsTransport::new(a, Encoding::Json, true, 1024);
        t.write(vec![
            Bytes::from_static(b"{\"a\":1}"),
            Bytes::from_static(b"{}"),
        ])
        .await
        .unwrap();
        assert_eq!(server_frame(&mut c).await.2, b"{\"a\":1}");
        assert_eq!(server_frame(&mut c).await.2, b"{}");
    }

    #[tokio::test]
    async fn server_close_carries_code_and_reason() {
        let (t, mut c) = pair(1024, Encoding::Json);
        t.close(Some(Disconnect::new(3501, "bad request"))).await;
        let (op, _, p) = server_frame(&mut c).await;
        assert_eq!(op, 8);
        assert_eq!(u16::from_be_bytes([p[0], p[1]]), 3501);
        assert_eq!(&p[2..], b"bad request");
    }

    #[tokio::test]
    async fn handshake_checks_headers_and_prefers_protobuf() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        assert!(handshake(&h, true).is_err(), "no key");
        h.insert(
            header::SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap(),
        );
        let (key, p) = handshake(&h, true).unwrap();
        assert_eq!(key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(p, None);
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            "centrifuge-json, centrifuge-protobuf".parse().unwrap(),
        );
        assert_eq!(handshake(&h, true).unwrap().1, Some(PROTOBUF_SUBPROTOCOL));
        assert_eq!(handshake(&h, false).unwrap().1, None);
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert!(handshake(&h, true).is_err(), "version 8");
    }
}
