//! Faults: PostgreSQL going away under a node. The node's PostgreSQL URL
//! points at a TCP proxy in the test; cutting the proxy (dropping its
//! connections and refusing new ones) stands in for an outage without
//! touching the machine's shared PostgreSQL.

use crate::common::{TestServer, next_pub};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use switchboard_client::{ClientError, SubscribeOptions};
use switchboard_proto::codec::Encoding;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

// The same file as `cluster`'s (starts the machine's PostgreSQL if it is down).
#[path = "../../../store/tests/support/services.rs"]
#[allow(clippy::duplicate_mod)]
mod services;

/// Any single call during the outage must answer within this (it fails
/// fast once the breaker is open; the first ones may wait for the pool's
/// acquire timeout).
const CALL_BOUND: Duration = Duration::from_secs(20);

/// A TCP proxy to the machine's PostgreSQL that can be cut and restored.
struct Proxy {
    port: u16,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    async fn start() -> Proxy {
        let mut p = Proxy {
            port: 0,
            task: None,
        };
        p.restore().await;
        p
    }

    /// Listens (again) on the proxy's port.
    async fn restore(&mut self) {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .expect("proxy port free");
        let listener: TcpListener = socket.listen(64).unwrap();
        self.port = listener.local_addr().unwrap().port();
        self.task = Some(tokio::spawn(async move {
            // Owned by this task: aborting it closes every proxied connection.
            let mut conns = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect("127.0.0.1:5432").await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Drops every connection and stops listening (new ones are refused).
    async fn cut(&mut self) {
        let task = self.task.take().expect("proxy running");
        task.abort();
        let _ = task.await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

fn unique_schema() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "sb_faults_{:x}{:x}",
        std::process::id(),
        nanos & 0xffff_ffff
    )
}

async fn metric(s: &TestServer, name: &str) -> Option<f64> {
    let text = reqwest::get(s.http("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Asserts a client publish failed with the store-unavailable error.
fn assert_store_unavailable_client(r: &Result<(), ClientError>) {
    match r {
        Err(ClientError::Protocol(e)) => {
            assert_eq!(e.code, 100, "{e:?}");
            assert_eq!(e.message, "store unavailable", "{e:?}");
        }
        other => panic!("durable publish during the outage: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_fails_durable_publishes_fast_and_loses_no_acknowledged_one() {
    services::ensure_postgres();
    let mut proxy = Proxy::start().await;
    let s = TestServer::with_config(&format!(
        r#"
[channel.defaults]
history_size = 1000
history_ttl = "1h"
allow_publish_for_client = true
allow_subscribe_for_client = true
allow_history_for_client = true
[channel.namespaces.eph]
history_size = 0
allow_publish_for_client = true
allow_subscribe_for_client = true
[cluster]
store = "postgres"
[cluster.postgres]
url = "postgres://postgres@127.0.0.1:{port}/test"
schema = "{schema}"
pool_size = 2
"#,
        port = proxy.port,
        schema = unique_schema(),
    ))
    .await;
    let (client, mut events) = s.connect("alice", Encoding::Json).await;
    client
        .subscribe("news", SubscribeOptions::default())
        .await
        .unwrap();
    client
        .subscribe("eph:room", SubscribeOptions::default())
        .await
        .unwrap();

    // Acknowledged publications, by their `n`.
    let mut acked = BTreeSet::new();
    let mut n = 0u32;
    for _ in 0..3 {
        n += 1;
        client
            .publish("news", json!({ "n": n }).to_string())
            .await
            .unwrap();
        acked.insert(n);
        n += 1;
        s.api_ok("publish", json!({"channel": "news", "data": {"n": n}}))
            .await;
        acked.insert(n);
    }

    proxy.cut().await;

    // Every durable publish fails (within the bound) with the clear error,
    // from a client and from the server API.
    for _ in 0..5 {
        n += 1;
        let r = tokio::time::timeout(
            CALL_BOUND,
            client.publish("news", json!({ "n": n }).to_string()),
        )
        .await
        .expect("client publish answers during the outage");
        assert_store_unavailable_client(&r);
        n += 1;
        let reply: Value = tokio::time::timeout(
            CALL_BOUND,
            s.api("publish", json!({"channel": "news", "data": {"n": n}})),
        )
        .await
        .expect("API publish answers during the outage");
        assert_eq!(reply["error"]["code"], 100, "{reply}");
        assert_eq!(reply["error"]["message"], "store unavailable", "{reply}");
    }
    assert_eq!(
        metric(&s, "switchboard_store_circuit_open").await,
        Some(1.0),
        "the breaker is open"
    );

    // Channels without history do not need the store.
    client
        .publish("eph:room", json!({"live": 1}).to_string())
        .await
        .expect("ephemeral publish during the outage");
    assert_eq!(
        next_pub(&mut events, "eph:room").await.1,
        json!({"live": 1})
    );
    s.api_ok(
        "publish",
        json!({"channel": "eph:room", "data": {"live": 2}}),
    )
    .await;
    assert_eq!(
        next_pub(&mut events, "eph:room").await.1,
        json!({"live": 2})
    );

    proxy.restore().await;

    // Durable publishes succeed again once a probe gets through (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        n += 1;
        let r = tokio::time::timeout(
            CALL_BOUND,
            client.publish("news", json!({ "n": n }).to_string()),
        )
        .await
        .expect("client publish answers after the outage");
        match r {
            Ok(()) => {
                acked.insert(n);
                break;
            }
            Err(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("durable publishes still fail 30 s after the store returned: {e}"),
        }
    }
    for _ in 0..3 {
        n += 1;
        client
            .publish("news", json!({ "n": n }).to_string())
            .await
            .unwrap();
        acked.insert(n);
        n += 1;
        s.api_ok("publish", json!({"channel": "news", "data": {"n": n}}))
            .await;
        acked.insert(n);
    }
    assert_eq!(
        metric(&s, "switchboard_store_circuit_open").await,
        Some(0.0),
        "the breaker closed"
    );

    // Zero acknowledged publications lost.
    let h = s
        .api_ok("history", json!({"channel": "news", "limit": 1000}))
        .await;
    let stored: BTreeSet<u32> = h["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap() as u32)
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert_eq!(acked.len(), 13);

    drop(client);
    s.stop().await;
}
