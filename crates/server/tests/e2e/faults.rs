//! Faults: PostgreSQL going away under a node, and NATS restarted under a
//! cluster.
//!
//! * PostgreSQL: the node's PostgreSQL URL points at a TCP proxy in the
//!   test; cutting the proxy (dropping its connections and refusing new
//!   ones) stands in for an outage without touching the machine's shared
//!   PostgreSQL.
//! * NATS: the test runs its own `nats-server` (a free port, its own
//!   JetStream directory), never the machine's shared one on 4222, kills it
//!   and starts it again on the same port and directory.

use crate::common::{API_KEY, TestServer, next_pub, no_event, token};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use switchboard_client::{Client, ClientError, ClientOptions, Event, Events, SubscribeOptions};
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

/// Breaker settings take effect: with `failure_threshold = 1` the first
/// failed store call opens the breaker, and with a long `cool_down` it stays
/// open (durable publishes keep failing fast) after PostgreSQL is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_settings_from_the_config_take_effect() {
    services::ensure_postgres();
    let mut proxy = Proxy::start().await;
    let s = TestServer::with_config(&format!(
        r#"
[channel.defaults]
history_size = 100
history_ttl = "1h"
allow_publish_for_client = true
allow_subscribe_for_client = true
[cluster]
store = "postgres"
[cluster.postgres]
url = "postgres://postgres@127.0.0.1:{port}/test"
schema = "{schema}"
pool_size = 2
[cluster.breaker]
failure_threshold = 1
slow_failure = "1h"
cool_down = "10m"
"#,
        port = proxy.port,
        schema = unique_schema(),
    ))
    .await;
    let (client, _events) = s.connect("alice", Encoding::Json).await;
    client.publish("news", r#"{"n":1}"#).await.unwrap();
    assert_eq!(
        metric(&s, "switchboard_store_circuit_open").await,
        Some(0.0),
        "closed while the store answers"
    );

    proxy.cut().await;
    let r = tokio::time::timeout(CALL_BOUND, client.publish("news", r#"{"n":2}"#))
        .await
        .expect("publish answers during the outage");
    assert_store_unavailable_client(&r);
    assert_eq!(
        metric(&s, "switchboard_store_circuit_open").await,
        Some(1.0),
        "one failure opened it (failure_threshold = 1)"
    );

    proxy.restore().await;
    // PostgreSQL answers again, but the 10-minute cool-down keeps the
    // breaker open: publishes still fail fast, without reaching the store.
    for n in 3..6 {
        let r = tokio::time::timeout(
            CALL_BOUND,
            client.publish("news", json!({ "n": n }).to_string()),
        )
        .await
        .expect("publish answers");
        assert_store_unavailable_client(&r);
    }
    assert_eq!(
        metric(&s, "switchboard_store_circuit_open").await,
        Some(1.0)
    );

    drop(client);
    s.stop().await;
}

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_tcp(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port}");
}

/// This test's own `nats-server` (JetStream on, data in `dir`).
struct Nats {
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl Nats {
    async fn start(port: u16, dir: &Path) -> Nats {
        let mut n = Nats {
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        n.restart().await;
        n
    }

    /// Starts the server on the same port and JetStream directory.
    async fn restart(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("nats.log"))
            .unwrap();
        let child = tokio::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("js"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server (2.9) on PATH");
        self.child = Some(child);
        wait_tcp(self.port).await;
    }

    /// SIGKILL: no goodbye to the clients.
    async fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}

/// A `switchboard serve` process.
struct NodeProc {
    child: tokio::process::Child,
    addr: String,
}

impl NodeProc {
    fn spawn(config: &Path, dir: &Path, i: usize) -> NodeProc {
        let addr = format!("127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.join(format!("node{i}.log"))).unwrap();
        let child = tokio::process::Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap(), "--http-addr"])
            .arg(&addr)
            .arg("--data-dir")
            .arg(dir.join(format!("node{i}")))
            .env("SWITCHBOARD_NODE_NAME", format!("node{i}"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        NodeProc { child, addr }
    }

    async fn wait_up(&self) {
        let url = format!("http://{}/readyz", self.addr);
        for _ in 0..300 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {} did not come up", self.addr);
    }

    async fn api(&self, method: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("http://{}/api/{method}", self.addr))
            .header("X-API-Key", API_KEY)
            .json(&body)
            .send()
            .await
            .expect("api call")
            .json()
            .await
            .expect("api reply")
    }

    async fn connect(&self, user: &str) -> (Client, Events) {
        Client::connect(
            &format!("ws://{}/connection/websocket", self.addr),
            ClientOptions::with_token(token(user)),
        )
        .await
        .expect("connect")
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until the node's NATS connection is `up` (or not).
    async fn wait_bus(&self, up: bool) {
        let want = if up { 1.0 } else { 0.0 };
        for _ in 0..600 {
            if self.metric("switchboard_bus_connected").await == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("node {}: bus never became connected={up}", self.addr);
    }
}

/// One subscriber's log of `news` publications, as (offset, data).
struct Sub {
    node: usize,
    _client: Client,
    events: Events,
    got: Vec<(u64, Value)>,
    eph: Vec<Value>,
}

impl Sub {
    /// Receives until `done(self)` holds, failing after `bound` (a failure
    /// bound, not a performance assertion).
    async fn until(&mut self, bound: Duration, what: &str, done: impl Fn(&Sub) -> bool) {
        let deadline = tokio::time::Instant::now() + bound;
        while !done(self) {
            let ev = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "subscriber on node {}: {what} not reached within {bound:?}; got {:?}",
                        self.node,
                        self.got.iter().map(|(o, _)| *o).collect::<Vec<_>>()
                    )
                })
                .expect("event stream open");
            match ev {
                Event::Publication {
                    channel,
                    publication,
                } => {
                    let v: Value = serde_json::from_slice(&publication.data).unwrap();
                    if channel == "news" {
                        self.got.push((publication.offset, v));
                    } else {
                        self.eph.push(v);
                    }
                }
                Event::Disconnected { code, reason } => {
                    panic!(
                        "subscriber on node {} disconnected: {code} {reason}",
                        self.node
                    )
                }
                _ => {}
            }
        }
    }

    fn has(&self, offsets: &BTreeSet<u64>) -> bool {
        let got: BTreeSet<u64> = self.got.iter().map(|(o, _)| *o).collect();
        offsets.is_subset(&got)
    }
}

/// NATS killed and restarted under two nodes (its own `nats-server`, the
/// machine's PostgreSQL with a fresh schema): during the outage durable
/// publishes on both nodes are acknowledged and reach the publishing node's
/// own subscribers; once NATS is back, every subscriber on every node has
/// every acknowledged publication exactly once, in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_loses_no_acknowledged_publication_and_local_delivery_continues() {
    services::ensure_postgres();
    let dir = crate::common::temp_dir("nats-restart");
    let mut nats = Nats::start(free_port(), &dir).await;
    let schema = unique_schema();
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[api]
keys = ["{API_KEY}"]
[token]
hmac_secret = "{secret}"
[channel.defaults]
history_size = 1000
history_ttl = "1h"
allow_publish_for_client = true
allow_subscribe_for_client = true
[channel.namespaces.eph]
history_size = 0
allow_publish_for_client = true
allow_subscribe_for_client = true
[cluster]
bus = "nats"
store = "postgres"
[cluster.nats]
urls = ["nats://127.0.0.1:{port}"]
registry_ttl = "3s"
[cluster.postgres]
url = "postgres://postgres@127.0.0.1:5432/test"
schema = "{schema}"
pool_size = 4
[cluster.breaker]
failure_threshold = 2
cool_down = "500ms"
"#,
            secret = crate::common::SECRET,
            port = nats.port,
        ),
    )
    .unwrap();
    let nodes: Vec<NodeProc> = (0..2).map(|i| NodeProc::spawn(&config, &dir, i)).collect();
    for n in &nodes {
        n.wait_up().await;
        n.wait_bus(true).await;
    }

    // Two subscribers on each node.
    let mut subs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        for k in 0..2 {
            let (client, events) = node.connect(&format!("sub{i}{k}")).await;
            for ch in ["news", "eph:live"] {
                client
                    .subscribe(ch, SubscribeOptions::default())
                    .await
                    .unwrap();
            }
            subs.push(Sub {
                node: i,
                _client: client,
                events,
                got: Vec::new(),
                eph: Vec::new(),
            });
        }
    }
    let (publisher, _pub_events) = nodes[1].connect("publisher").await;

    // Acknowledged publications: offset → data.
    let mut acked: BTreeMap<u64, Value> = BTreeMap::new();
    let mut seq = 0u32;
    let mut publish_api = async |node: usize, acked: &mut BTreeMap<u64, Value>| {
        seq += 1;
        let data = json!({ "node": node, "seq": seq });
        let reply = nodes[node]
            .api("publish", json!({ "channel": "news", "data": data }))
            .await;
        assert!(
            reply.get("error").is_none(),
            "publish on node {node}: {reply}"
        );
        let offset = reply["result"]["offset"].as_u64().expect("offset");
        acked.insert(offset, data);
        offset
    };

    // Before: everything crosses the bus.
    for _ in 0..3 {
        publish_api(0, &mut acked).await;
        publish_api(1, &mut acked).await;
    }
    let before: BTreeSet<u64> = acked.keys().copied().collect();
    for sub in &mut subs {
        sub.until(Duration::from_secs(30), "the first publications", |s| {
            s.has(&before)
        })
        .await;
    }

    nats.kill().await;
    for n in &nodes {
        n.wait_bus(false).await;
    }

    // During the outage: acknowledged on both nodes (server API and a
    // client), and delivered to the publishing node's own subscribers.
    let mut during: [BTreeSet<u64>; 2] = Default::default();
    for _ in 0..5 {
        let o = publish_api(0, &mut acked).await;
        during[0].insert(o);
        let o = publish_api(1, &mut acked).await;
        during[1].insert(o);
    }
    publisher
        .publish("news", json!({ "client": 1 }).to_string())
        .await
        .expect("client publish acknowledged during the outage");
    let h = nodes[1]
        .api(
            "history",
            json!({ "channel": "news", "limit": 1, "reverse": true }),
        )
        .await;
    let top = h["result"]["offset"].as_u64().expect("history offset");
    acked.insert(top, json!({ "client": 1 }));
    during[1].insert(top);
    // Ephemeral publications reach the publishing node's subscribers.
    let reply = nodes[0]
        .api(
            "publish",
            json!({ "channel": "eph:live", "data": { "eph": 1 } }),
        )
        .await;
    assert!(reply.get("error").is_none(), "{reply}");
    for sub in &mut subs {
        let mine = during[sub.node].clone();
        let eph = sub.node == 0;
        sub.until(
            Duration::from_secs(30),
            "its own node's publications during the outage",
            |s| s.has(&mine) && (!eph || !s.eph.is_empty()),
        )
        .await;
    }

    nats.restart().await;
    let restarted = std::time::Instant::now();
    for n in &nodes {
        n.wait_bus(true).await;
    }
    let reconnected = restarted.elapsed();
    let all: BTreeSet<u64> = acked.keys().copied().collect();
    for sub in &mut subs {
        sub.until(
            Duration::from_secs(60),
            "every acknowledged publication",
            |s| s.has(&all),
        )
        .await;
    }
    let caught_up = restarted.elapsed();

    // And the bus carries new publications between the nodes again.
    for _ in 0..2 {
        publish_api(0, &mut acked).await;
        publish_api(1, &mut acked).await;
    }
    let all: BTreeSet<u64> = acked.keys().copied().collect();
    for sub in &mut subs {
        sub.until(
            Duration::from_secs(30),
            "publications after the restart",
            |s| s.has(&all),
        )
        .await;
        no_event(
            &mut sub.events,
            Duration::from_millis(300),
            |e| matches!(e, Event::Publication { channel, .. } if channel == "news"),
        )
        .await;
        // Exactly once, in offset order, with the acknowledged data.
        let offsets: Vec<u64> = sub.got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            all.iter().copied().collect::<Vec<_>>(),
            "subscriber on node {}: every acknowledged offset once, in order",
            sub.node
        );
        for (o, v) in &sub.got {
            assert_eq!(&acked[o], v, "offset {o}");
        }
    }
    eprintln!(
        "nats restart: {} acknowledged publications ({} during the outage); nodes reconnected \
         {:?} after nats-server started, every subscriber complete after {:?}",
        acked.len(),
        during[0].len() + during[1].len(),
        reconnected,
        caught_up
    );

    drop(subs);
    for mut n in nodes {
        let _ = n.child.start_kill();
        let _ = n.child.wait().await;
    }
    nats.kill().await;
    let _ = std::process::Command::new("psql")
        .args([
            "postgres://postgres@127.0.0.1:5432/test",
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
        ])
        .output();
    let _ = std::fs::remove_dir_all(&dir);
}
