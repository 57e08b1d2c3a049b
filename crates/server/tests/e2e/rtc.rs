//! Call-signaling test support shared by the rooms, calls and call-log
//! tests: `rtc.*` RPCs, and a participant whose media client answers the
//! SFU's offers.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchboard_client::media::{MediaClient, MediaOptions};
use switchboard_client::{Client, ClientError, Event, Events};
use switchboard_proto::codec::Encoding;

/// Calls an `rtc.*` (or any) RPC with a JSON body and parses the JSON reply.
pub async fn rpc(c: &Client, method: &str, body: Value) -> Result<Value, ClientError> {
    let r = c.rpc(method, body.to_string().into_bytes()).await?;
    Ok(serde_json::from_slice(&r.data).unwrap())
}

pub type Pushes = Arc<std::sync::Mutex<Vec<Value>>>;

/// A connection whose pushes are recorded. With a media client, SFU offers
/// (`rtc.offer`, `rtc.mode`) are answered, and on `rtc.mode` it publishes.
pub struct Member {
    pub client: Client,
    pub id: String,
    pub media: Arc<MediaClient>,
    pub pushes: Pushes,
    /// The media client the push task answers offers with.
    slot: Arc<std::sync::Mutex<Arc<MediaClient>>>,
}

impl Member {
    pub async fn connect(s: &TestServer, user: &str, room: &str) -> Member {
        let (client, events) = s.connect(user, Encoding::Json).await;
        Self::with(client, events, room).await
    }

    pub async fn with(client: Client, mut events: Events, room: &str) -> Member {
        let id = client.client_id().to_string();
        let media = Arc::new(MediaClient::new(MediaOptions::default()).await.unwrap());
        let pushes: Pushes = Default::default();
        let slot = Arc::new(std::sync::Mutex::new(media.clone()));
        let (c, s, p, room) = (
            client.clone(),
            slot.clone(),
            pushes.clone(),
            room.to_string(),
        );
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let Event::Message { data } = ev else {
                    continue;
                };
                let msg: Value = serde_json::from_slice(&data).unwrap();
                p.lock().unwrap().push(msg.clone());
                let m = s.lock().unwrap().clone();
                let offer = msg["sdp"].as_str().or(msg["offer"].as_str());
                if msg["type"] == "rtc.offer" || msg["type"] == "rtc.mode" {
                    let answer = m.accept_subscriber_offer(offer.unwrap()).unwrap();
                    let _ = rpc(&c, "rtc.answer", json!({"room": room, "sdp": answer})).await;
                }
                if msg["type"] == "rtc.mode" {
                    publish(&c, &m, &room).await;
                }
            }
        });
        Member {
            client,
            id,
            media,
            pushes,
            slot,
        }
    }

    /// Joins again with a fresh media client (what an SDK does on
    /// `rtc.reconnect`).
    pub async fn rejoin(&mut self, room: &str, publish_media: bool) -> Value {
        self.media = Arc::new(MediaClient::new(MediaOptions::default()).await.unwrap());
        *self.slot.lock().unwrap() = self.media.clone();
        self.join(room, publish_media).await
    }

    /// `rtc.join`; on an SFU join answers the offer (and publishes).
    pub async fn join(&self, room: &str, publish_media: bool) -> Value {
        let joined = rpc(&self.client, "rtc.join", json!({"room": room}))
            .await
            .expect("join");
        assert_eq!(joined["participant"], self.id.as_str());
        if joined["mode"] == "sfu" {
            let answer = self
                .media
                .accept_subscriber_offer(joined["offer"].as_str().unwrap())
                .unwrap();
            rpc(
                &self.client,
                "rtc.answer",
                json!({"room": room, "sdp": answer}),
            )
            .await
            .unwrap();
            if publish_media {
                publish(&self.client, &self.media, room).await;
            }
        }
        joined
    }

    pub fn saw(&self, kind: &str) -> Vec<Value> {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }
}

pub async fn publish(c: &Client, m: &MediaClient, room: &str) {
    let offer = m.publish_offer().unwrap();
    let answer = rpc(c, "rtc.publish", json!({"room": room, "sdp": offer}))
        .await
        .expect("publish");
    m.accept_publish_answer(answer["sdp"].as_str().unwrap())
        .unwrap();
}

pub async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
