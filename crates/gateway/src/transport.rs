//! The transport-independent connection driver.
//!
//! Every transport (WebSocket, HTTP-streaming, SSE and their unidirectional
//! variants) is a thin [`Transport`]: a source of client frames and a sink for
//! batches of encoded frames. [`drive`] runs one connection: it feeds frames
//! into the [`Session`], wakes it at its deadlines, runs server-side controls,
//! writes what the [`Conn`](crate::hub::Conn) queued, and finally closes the
//! transport with the disconnect that ended the connection.

use crate::session::Session;
use bytes::Bytes;
use std::future::Future;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use switchboard_proto::client;
use switchboard_proto::codes::Disconnect;

/// What a transport received from the client.
pub(crate) enum Inbound {
    /// A frame of commands (or, on unidirectional transports, the connect request).
    Frame(Bytes),
    /// The client went away.
    Closed,
    /// The transport failed in a way the client must be told about.
    Fail(Disconnect),
}

/// One connection's transport, as seen by [`drive`].
pub(crate) trait Transport: Send {
    /// The next frame from the client. Transports without an inbound
    /// direction resolve only when the client goes away. Must be cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Inbound> + Send;

    /// Writes one batch of encoded frames (replies or pushes, in the
    /// connection's encoding). `Err` when the client is gone.
    fn write(&mut self, frames: Vec<Bytes>) -> impl Future<Output = Result<(), ()>> + Send;

    /// Ends the connection. `Some` when the server closes it: the transport
    /// tells the client why (close frame, or a disconnect push written as a
    /// last frame on transports without close codes).
    fn close(self, disconnect: Option<Disconnect>) -> impl Future<Output = ()> + Send;
}

/// Wall clock, Unix seconds.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The disconnect push frame (a reply carrying it on bidirectional
/// connections, the bare push on unidirectional ones).
pub(crate) fn disconnect_frame(conn: &crate::hub::Conn, d: &Disconnect) -> Option<Bytes> {
    conn.encode(&client::Reply {
        push: Some(client::Push {
            disconnect: Some(d.to_push()),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// Counts a disconnect by code.
pub(crate) fn count_disconnect(d: Option<&Disconnect>) {
    let code = d.map_or(Disconnect::CONNECTION_CLOSED.code, |d| d.code);
    metrics::counter!("switchboard_disconnects_total", "code" => code.to_string()).increment(1);
}

/// Writes everything queued, in batches of about `batch` bytes. Returns the
/// disconnect to perform, or `Err` when the transport failed.
async fn write_pending<T: Transport>(
    transport: &mut T,
    session: &Session,
    batch: usize,
) -> Result<Option<Disconnect>, ()> {
    let conn = session.conn();
    loop {
        let (frames, disconnect) = conn.take_frames(batch);
        if frames.is_empty() {
            return Ok(disconnect);
        }
        let n: usize = frames.iter().map(Bytes::len).sum();
        metrics::counter!("switchboard_transport_bytes_out_total").increment(n as u64);
        transport.write(frames).await?;
    }
}

/// Runs one connection until it ends. `initial` is a frame the client sent
/// with the request that opened the transport (the connect command of the
/// emulated transports, the connect request of the unidirectional ones).
pub(crate) async fn drive<T: Transport>(
    mut session: Session,
    mut transport: T,
    initial: Option<Bytes>,
) {
    let conn = session.conn().clone();
    let batch = session.write_batch_bytes();
    let mut outcome: Option<Disconnect> = None;
    if let Some(frame) = initial
        && let Err(d) = Box::pin(session.handle_frame(&frame, Instant::now(), unix_now())).await
    {
        conn.disconnect(d);
    }
    match write_pending(&mut transport, &session, batch).await {
        Ok(Some(d)) => outcome = Some(d),
        Ok(None) => {}
        Err(()) => {
            count_disconnect(None);
            Box::pin(session.close()).await;
            return;
        }
    }
    if outcome.is_none() {
        outcome = loop {
            let deadline = tokio::time::Instant::from_std(session.next_deadline());
            let step = tokio::select! {
                biased;
                _ = conn.notified() => Ok(()),
                inbound = transport.recv() => match inbound {
                    // The session's futures are boxed: they are large and
                    // short-lived, and inline they would make every idle
                    // connection's task as large as the largest of them.
                    Inbound::Frame(f) => Box::pin(session.handle_frame(&f, Instant::now(), unix_now())).await,
                    Inbound::Closed => break None,
                    Inbound::Fail(d) => Err(d),
                },
                _ = tokio::time::sleep_until(deadline) => Box::pin(session.handle_timeout(Instant::now(), unix_now())).await,
            };
            if let Err(d) = step {
                conn.disconnect(d);
            }
            // Run server-side actions, then write everything queued.
            for c in conn.take_controls() {
                if let Err(d) = Box::pin(session.handle_control(c, unix_now())).await {
                    conn.disconnect(d);
                }
            }
            match write_pending(&mut transport, &session, batch).await {
                Ok(Some(d)) => break Some(d),
                Ok(None) => {}
                Err(()) => break None,
            }
        };
    }
    if let Some(d) = &outcome {
        tracing::debug!(code = d.code, reason = %d.reason, "closing connection");
    }
    count_disconnect(outcome.as_ref());
    transport.close(outcome).await;
    Box::pin(session.close()).await;
}
