//! Cluster mode: three `switchboard` processes on loopback sharing the
//! machine's NATS (a unique subject prefix and KV buckets per test) and
//! PostgreSQL (a fresh schema per test), with real WebSocket clients on
//! different nodes.

use crate::common::{API_KEY, next_event, no_event, token};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use switchboard_client::{Client, ClientOptions, Event, Events, SubscribeOptions};

#[path = "../../../store/tests/support/services.rs"]
mod services;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Registry TTL of the test clusters: a killed node vanishes within it.
const TTL: Duration = Duration::from_secs(3);

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}{:x}{:x}", std::process::id(), nanos & 0xffff_ffff)
}

struct Node {
    child: tokio::process::Child,
    addr: String,
}

impl Node {
    fn ws(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    async fn api(&self, method: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(format!("http://{}/api/{method}", self.addr))
            .header("X-API-Key", API_KEY)
            .json(&body)
            .send()
            .await
            .expect("api call");
        resp.json().await.expect("api reply")
    }

    async fn api_ok(&self, method: &str, body: Value) -> Value {
        let v = self.api(method, body).await;
        assert!(v.get("error").is_none(), "{method}: {v}");
        v["result"].clone()
    }

    async fn connect(&self, user: &str) -> (Client, Events) {
        Client::connect(&self.ws(), ClientOptions::with_token(token(user)))
            .await
            .expect("connect")
    }
}

struct TestCluster {
    nodes: Vec<Node>,
    config: PathBuf,
    schema: String,
    dir: PathBuf,
}

impl TestCluster {
    async fn start(tag: &str, n: usize) -> TestCluster {
        Self::start_with(tag, n, "", &[]).await
    }

    /// `n` nodes with `extra` appended to the shared configuration; node
    /// `i` runs `roles[i]` (a TOML array) if given, else every role.
    async fn start_with(tag: &str, n: usize, extra: &str, roles: &[&str]) -> TestCluster {
        services::ensure_nats();
        services::ensure_postgres();
        let prefix = unique(&format!("c{tag}"));
        let schema = unique(&format!("sb_{tag}_")).to_lowercase();
        let dir = crate::common::temp_dir(&format!("cluster-{tag}"));
        let config = dir.join("cluster.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[api]
keys = ["{API_KEY}"]
[token]
hmac_secret = "{secret}"
[channel]
allow_unknown_namespaces = true
[channel.defaults]
presence = true
join_leave = true
history_size = 1000
history_ttl = "1h"
allow_publish_for_client = true
allow_subscribe_for_client = true
allow_presence_for_client = true
allow_history_for_client = true
[cluster]
bus = "nats"
store = "postgres"
[cluster.nats]
urls = ["nats://127.0.0.1:4222"]
subject_prefix = "{prefix}"
registry_ttl = "{ttl}s"
[cluster.postgres]
url = "{PG_URL}"
schema = "{schema}"
pool_size = 4
{extra}
"#,
                secret = crate::common::SECRET,
                ttl = TTL.as_secs(),
            ),
        )
        .unwrap();
        // Migrations first (as an operator would), then the nodes.
        let out = std::process::Command::new(BIN)
            .args(["migrate", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut nodes = Vec::new();
        for i in 0..n {
            nodes.push(Self::spawn_with(&config, &dir, i, roles.get(i).copied()));
        }
        for node in &nodes {
            wait_up(&node.addr).await;
        }
        let c = TestCluster {
            nodes,
            config,
            schema,
            dir,
        };
        // Every node sees every other in the registry (a node refreshes its
        // list of live nodes every second; `info` refreshes it at once).
        for i in 0..n {
            c.wait_nodes(i, n).await;
        }
        c
    }

    fn spawn_with(
        config: &std::path::Path,
        dir: &std::path::Path,
        i: usize,
        roles: Option<&str>,
    ) -> Node {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Self::spawn_at(config, dir, i, roles, format!("127.0.0.1:{port}"))
    }

    /// Node `i` listening on `addr` (a restart at the same address).
    fn spawn_at(
        config: &std::path::Path,
        dir: &std::path::Path,
        i: usize,
        roles: Option<&str>,
        addr: String,
    ) -> Node {
        let data = dir.join(format!("node{i}"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("node{i}.log")))
            .unwrap();
        let mut cmd = tokio::process::Command::new(BIN);
        if let Some(roles) = roles {
            cmd.env("SWITCHBOARD_CLUSTER_ROLES", roles);
        }
        let child = cmd
            .args([
                "serve",
                "--config",
                config.to_str().unwrap(),
                "--http-addr",
                &addr,
                "--data-dir",
                data.to_str().unwrap(),
            ])
            .env("SWITCHBOARD_NODE_NAME", format!("node{i}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Node { child, addr }
    }

    /// Waits until `info` on node `on` lists `n` nodes; returns them.
    async fn wait_nodes(&self, on: usize, n: usize) -> Vec<Value> {
        let mut last = Value::Null;
        for _ in 0..100 {
            let info = self.nodes[on].api_ok("info", json!({})).await;
            let nodes = info["nodes"].as_array().cloned().unwrap_or_default();
            if nodes.len() == n {
                return nodes;
            }
            last = info;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("info never listed {n} nodes: {last}");
    }

    fn nodes_cli(&self) -> Vec<Value> {
        let out = std::process::Command::new(BIN)
            .args(["nodes", "--json", "--config", self.config.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nodes: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("nodes --json")
    }

    async fn stop(mut self) {
        for n in &mut self.nodes {
            let _ = n.child.start_kill();
            let _ = n.child.wait().await;
        }
        let _ = std::process::Command::new("psql")
            .args([
                PG_URL,
                "-q",
                "-c",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema),
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_up(addr: &str) {
    let url = format!("http://{addr}/readyz");
    for _ in 0..200 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("node {addr} did not come up");
}

fn join_leave() -> SubscribeOptions {
    SubscribeOptions {
        join_leave: true,
        ..Default::default()
    }
}

/// Collects `n` publications of `channel` as (offset, data).
async fn collect(events: &mut Events, channel: &str, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::with_capacity(n);
    tokio::time::timeout(Duration::from_secs(30), async {
        while out.len() < n {
            match events.recv().await.expect("event stream open") {
                Event::Publication {
                    channel: c,
                    publication,
                } if c == channel => {
                    out.push((
                        publication.offset,
                        serde_json::from_slice(&publication.data).unwrap(),
                    ));
                }
                Event::Disconnected { code, reason } => panic!("disconnected {code} {reason}"),
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} publications arrived", out.len()));
    out
}

/// Publications from two publishers on two nodes reach subscribers on all
/// three nodes once each, in channel order; a client that reconnects to
/// another node recovers what it missed; history reads the same from every
/// node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_cross_nodes_in_order_and_recover_on_another_node() {
    let c = TestCluster::start("order", 3).await;
    let ch = "room:order";
    let mut subs = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let (client, mut events) = node.connect(&format!("sub{i}")).await;
        client
            .subscribe(ch, SubscribeOptions::default())
            .await
            .unwrap();
        // Each node's first subscriber subscribed the bus: a publication
        // from elsewhere arrives.
        let _ = &mut events;
        subs.push((client, events));
    }
    // Three publishers on node 0 and three on node 1, concurrently: the
    // store orders them, the bus delivers them crossed, every subscriber
    // must see them in offset order anyway.
    const PUBLISHERS: usize = 6;
    const PER: usize = 50;
    const TOTAL: usize = PUBLISHERS * PER;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (client, _events) = c.nodes[p % 2].connect(&format!("pub{p}")).await;
        publishers.push(tokio::spawn(async move {
            for seq in 0..PER {
                client
                    .publish(ch, json!({ "p": p, "seq": seq }).to_string())
                    .await
                    .expect("publish");
            }
            client
        }));
    }
    for p in publishers {
        p.await.unwrap();
    }
    for (i, (_, events)) in subs.iter_mut().enumerate() {
        let got = collect(events, ch, TOTAL).await;
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            offsets,
            (1..=TOTAL as u64).collect::<Vec<_>>(),
            "subscriber on node {i}: offsets strictly increasing, no gap, no duplicate"
        );
        // Each publisher's messages arrive once and in its order.
        let mut next = [0u64; PUBLISHERS];
        for (_, v) in &got {
            let p = v["p"].as_u64().unwrap() as usize;
            assert_eq!(v["seq"].as_u64().unwrap(), next[p], "node {i}: {v}");
            next[p] += 1;
        }
        assert_eq!(next, [PER as u64; PUBLISHERS]);
        no_event(events, Duration::from_millis(300), |e| {
            matches!(e, Event::Publication { .. })
        })
        .await;
    }

    // History is the same whichever node answers.
    let h0 = c.nodes[0]
        .api_ok("history", json!({ "channel": ch, "limit": -1 }))
        .await;
    let h2 = c.nodes[2]
        .api_ok("history", json!({ "channel": ch, "limit": -1 }))
        .await;
    assert_eq!(h0["publications"].as_array().unwrap().len(), TOTAL);
    assert_eq!(h0, h2);
    let epoch = h0["epoch"].as_str().unwrap().to_string();

    // A client on node 0 goes away at offset 300; 5 more are published
    // through node 1; it comes back on node 2 and recovers them.
    let (client, mut events) = c.nodes[0].connect("roamer").await;
    let r = client
        .subscribe(
            ch,
            SubscribeOptions {
                recoverable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let since = r.offset;
    assert_eq!(since, TOTAL as u64);
    client.close().await;
    let _ = next_event(&mut events, |e| matches!(e, Event::Disconnected { .. })).await;
    for i in 0..5 {
        c.nodes[1]
            .api_ok("publish", json!({ "channel": ch, "data": { "missed": i } }))
            .await;
    }
    let (client, mut events) = c.nodes[2].connect("roamer").await;
    let r = client
        .subscribe(
            ch,
            SubscribeOptions {
                recover: Some((since, epoch.clone())),
                recoverable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(r.recovered, "recovered on another node");
    let recovered: Vec<u64> = r.publications.iter().map(|p| p.offset).collect();
    assert_eq!(recovered, (since + 1..=since + 5).collect::<Vec<_>>());
    // And live delivery continues on the new node.
    c.nodes[0]
        .api_ok("publish", json!({ "channel": ch, "data": { "after": 1 } }))
        .await;
    let got = collect(&mut events, ch, 1).await;
    assert_eq!(got[0].0, since + 6);
    c.stop().await;
}

/// Presence, presence stats and join/leave span nodes; server API actions
/// reach connections on other nodes; `channels` sums every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_join_leave_and_api_actions_span_nodes() {
    let c = TestCluster::start("presence", 3).await;
    let ch = "room:presence";
    let (alice, mut alice_ev) = c.nodes[0].connect("alice").await;
    alice.subscribe(ch, join_leave()).await.unwrap();
    let (bob, mut bob_ev) = c.nodes[1].connect("bob").await;
    bob.subscribe(ch, join_leave()).await.unwrap();
    // Alice (node 0) sees Bob (node 1) join.
    match next_event(&mut alice_ev, |e| matches!(e, Event::Join { .. })).await {
        Event::Join { channel, info } => {
            assert_eq!(channel, ch);
            assert_eq!(info.user, "bob");
            assert_eq!(info.client, bob.client_id());
        }
        _ => unreachable!(),
    }
    let (carol, mut carol_ev) = c.nodes[2].connect("carol").await;
    carol.subscribe(ch, join_leave()).await.unwrap();
    let _ = next_event(&mut bob_ev, |e| matches!(e, Event::Join { .. })).await;

    // Presence asked on any node lists all three clients.
    let expected: HashSet<String> = [&alice, &bob, &carol]
        .iter()
        .map(|c| c.client_id().to_string())
        .collect();
    for node in &c.nodes {
        let p = node.api_ok("presence", json!({ "channel": ch })).await;
        let clients: HashSet<String> = p["presence"].as_object().unwrap().keys().cloned().collect();
        assert_eq!(clients, expected, "presence on {}", node.addr);
        let s = node
            .api_ok("presence_stats", json!({ "channel": ch }))
            .await;
        assert_eq!(s["num_clients"], 3);
        assert_eq!(s["num_users"], 3);
    }
    // A client's own presence call sees the other nodes too.
    let p = bob.presence(ch).await.unwrap();
    assert_eq!(p.presence.len(), 3);

    // `channels` on node 0 counts subscribers of every node.
    let chans = c.nodes[0].api_ok("channels", json!({})).await;
    assert_eq!(chans["channels"][ch]["num_clients"], 3, "{chans}");

    // Bob leaves: Alice and Carol see it; presence drops him everywhere.
    bob.unsubscribe(ch).await.unwrap();
    for ev in [&mut alice_ev, &mut carol_ev] {
        match next_event(ev, |e| matches!(e, Event::Leave { .. })).await {
            Event::Leave { info, .. } => assert_eq!(info.user, "bob"),
            _ => unreachable!(),
        }
    }
    let s = c.nodes[2]
        .api_ok("presence_stats", json!({ "channel": ch }))
        .await;
    assert_eq!(s["num_clients"], 2);

    // Server API on node 0 acts on Carol's connection on node 2.
    c.nodes[0]
        .api_ok("unsubscribe", json!({ "user": "carol", "channel": ch }))
        .await;
    let _ = next_event(
        &mut carol_ev,
        |e| matches!(e, Event::Unsubscribed { channel, .. } if channel == ch),
    )
    .await;
    c.nodes[1]
        .api_ok(
            "subscribe",
            json!({ "user": "carol", "channel": "room:server-side" }),
        )
        .await;
    let _ = next_event(
        &mut carol_ev,
        |e| matches!(e, Event::Subscribed { channel, .. } if channel == "room:server-side"),
    )
    .await;
    c.nodes[0]
        .api_ok(
            "disconnect",
            json!({ "user": "carol", "disconnect": { "code": 4100, "reason": "bye" } }),
        )
        .await;
    match next_event(&mut carol_ev, |e| matches!(e, Event::Disconnected { .. })).await {
        Event::Disconnected { code, .. } => assert_eq!(code, 4100),
        _ => unreachable!(),
    }
    // Alice, on the node that received the call, stays connected.
    alice.presence(ch).await.unwrap();
    c.stop().await;
}

/// Nodes register their roles, address and load; `info` and `switchboard
/// nodes` list them, and a node killed with SIGKILL disappears within the
/// registry TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registry_lists_live_nodes_and_forgets_a_killed_one() {
    let mut c = TestCluster::start("nodes", 3).await;
    let ch = "room:registry";
    let (client, _events) = c.nodes[2].connect("dave").await;
    client.subscribe(ch, join_leave()).await.unwrap();
    let (erin, _erin_events) = c.nodes[0].connect("erin").await;
    erin.subscribe(ch, join_leave()).await.unwrap();
    let users_present = |p: &Value| -> HashSet<String> {
        p["presence"]
            .as_object()
            .unwrap()
            .values()
            .map(|i| i["user"].as_str().unwrap().to_string())
            .collect()
    };
    let p = c.nodes[0]
        .api_ok("presence", json!({ "channel": ch }))
        .await;
    assert_eq!(
        users_present(&p),
        HashSet::from(["dave".into(), "erin".into()])
    );
    let info = c.wait_nodes(1, 3).await;
    let names: HashSet<&str> = info.iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, HashSet::from(["node0", "node1", "node2"]));
    let listed = c.nodes_cli();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let by_addr: BTreeMap<String, &Value> = listed
        .iter()
        .map(|n| (n["address"].as_str().unwrap().to_string(), n))
        .collect();
    for node in &c.nodes {
        let entry = by_addr
            .get(&format!("http://{}", node.addr))
            .unwrap_or_else(|| panic!("{} registered: {listed:?}", node.addr));
        assert_eq!(
            entry["roles"],
            json!(["gateway", "media", "api", "auth"]),
            "{entry}"
        );
    }
    // Load (connections) reaches the registry with the heartbeat.
    let dave_node = format!("http://{}", c.nodes[2].addr);
    let mut load_seen = false;
    let mut listed = Vec::new();
    for _ in 0..50 {
        listed = c.nodes_cli();
        if listed
            .iter()
            .any(|n| n["address"] == dave_node.as_str() && n["load"].as_f64() == Some(1.0))
        {
            load_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(load_seen, "node2 advertises its one connection: {listed:?}");

    // kill -9 node 2: it cannot deregister, its entry expires.
    let pid = c.nodes[2].child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = c.nodes[2].child.wait().await;
    let started = std::time::Instant::now();
    let left = c.wait_nodes(0, 2).await;
    assert!(
        started.elapsed() < TTL + Duration::from_secs(5),
        "gone within the TTL"
    );
    assert!(left.iter().all(|n| n["name"] != "node2"), "{left:?}");
    assert_eq!(c.nodes_cli().len(), 2);
    // The dead node's connections are gone from presence too (within the TTL).
    let mut present = HashSet::new();
    for _ in 0..40 {
        let p = c.nodes[0]
            .api_ok("presence", json!({ "channel": ch }))
            .await;
        present = users_present(&p);
        if !present.contains("dave") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(present, HashSet::from(["erin".to_string()]));
    let stats = c.nodes[1]
        .api_ok("presence_stats", json!({ "channel": ch }))
        .await;
    assert_eq!(stats["num_clients"], 1, "{stats}");
    c.stop().await;
}

/// `--roles` decides what a node serves: without `gateway` no client
/// connections, without `api` no server API, without `media` no calls; a
/// bad role is refused naming the key.
#[tokio::test]
async fn roles_select_what_a_node_serves() {
    let api_only = crate::common::TestServer::with_config("[cluster]\nroles = [\"api\"]\n").await;
    let err = Client::connect(
        &api_only.ws_url(),
        ClientOptions::with_token(token("alice")),
    )
    .await;
    assert!(err.is_err(), "no client connections on an api-only node");
    let info = api_only.api_ok("info", json!({})).await;
    assert_eq!(info["nodes"].as_array().unwrap().len(), 1);
    // No SFU: room methods say media is not available here.
    let v = api_only.api("room_list", json!({})).await;
    assert_eq!(v["error"]["code"], 108, "{v}");
    api_only.stop().await;

    let gateway_only =
        crate::common::TestServer::with_config("[cluster]\nroles = [\"gateway\"]\n").await;
    let (client, _events) = gateway_only.connect("alice", Default::default()).await;
    assert!(!client.client_id().is_empty());
    let status = reqwest::Client::new()
        .post(gateway_only.http("/api/info"))
        .header("X-API-Key", API_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "no server API on a gateway-only node");
    gateway_only.stop().await;

    let out = std::process::Command::new(BIN)
        .args(["serve", "--dev", "--roles", "gateway,cook"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cluster.roles"), "{stderr}");
}

/// What one failover subscriber saw.
#[derive(Debug, Default)]
struct Tally {
    /// Publications handed to the application after dedup by offset, in order.
    delivered: Vec<u64>,
    /// Publications received again (same offset) and dropped by the dedup.
    duplicates: usize,
    /// Connections after the first one.
    reconnects: usize,
    /// Re-subscriptions the server answered with `recovered: false`.
    not_recovered: usize,
    /// Epochs seen (one unless the stream was reset).
    epochs: HashSet<String>,
}

/// Jitter in `0..max` from the clock (no RNG dependency needed).
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u128;
    Duration::from_nanos((nanos % max.as_nanos().max(1)) as u64)
}

/// A subscriber with the behaviour of an SDK given several endpoints: it
/// starts on `endpoints[start]`; when its connection ends it tries the next
/// endpoint with exponential backoff and jitter, and re-subscribes with
/// recovery from the last offset and epoch it saw; it drops a publication
/// whose offset it already has. It returns once it has offsets `1..=target`
/// (`target` is 0 until the publisher is done).
async fn failover_subscriber(
    endpoints: Vec<String>,
    start: usize,
    user: String,
    channel: String,
    mut target: tokio::sync::watch::Receiver<u64>,
    ready: tokio::sync::oneshot::Sender<()>,
) -> Tally {
    let mut tally = Tally::default();
    let mut ready = Some(ready);
    let mut position: Option<(u64, String)> = None;
    let mut idx = start;
    let mut attempt = 0u32;
    loop {
        let url = &endpoints[idx % endpoints.len()];
        let connected = Client::connect(url, ClientOptions::with_token(token(&user))).await;
        let (client, mut events) = match connected {
            Ok(c) => c,
            Err(_) => {
                // Backoff with jitter, then the next endpoint.
                let base = Duration::from_millis(50 * 2u64.pow(attempt.min(4)));
                tokio::time::sleep(base + jitter(base)).await;
                attempt += 1;
                idx += 1;
                continue;
            }
        };
        if position.is_some() {
            tally.reconnects += 1;
        }
        let r = match client
            .subscribe(
                &channel,
                SubscribeOptions {
                    recover: position.clone(),
                    recoverable: true,
                    ..Default::default()
                },
            )
            .await
        {
            Ok(r) => r,
            Err(_) => {
                idx += 1;
                continue;
            }
        };
        attempt = 0;
        if position.is_some() && !r.recovered {
            tally.not_recovered += 1;
        }
        tally.epochs.insert(r.epoch.clone());
        let mut last = position.as_ref().map_or(r.offset, |p| p.0);
        let epoch = r.epoch.clone();
        let accept = |offset: u64, tally: &mut Tally, last: &mut u64| {
            if offset <= *last {
                tally.duplicates += 1;
            } else {
                tally.delivered.push(offset);
                *last = offset;
            }
        };
        for p in &r.publications {
            accept(p.offset, &mut tally, &mut last);
        }
        position = Some((last, epoch.clone()));
        if let Some(tx) = ready.take() {
            let _ = tx.send(());
        }
        loop {
            let want = *target.borrow_and_update();
            if want > 0 && last >= want {
                client.close().await;
                return tally;
            }
            tokio::select! {
                _ = target.changed() => {}
                ev = events.recv() => match ev {
                    Some(Event::Publication { channel: c, publication }) if c == channel => {
                        accept(publication.offset, &mut tally, &mut last);
                        position = Some((last, epoch.clone()));
                    }
                    Some(Event::Disconnected { .. }) | None => break,
                    Some(_) => {}
                }
            }
        }
        idx += 1;
    }
}

/// `n` [`failover_subscriber`]s on `channel`, subscriber `i` starting on
/// node `i % nodes`, each subscribed before the next starts; send the
/// publisher's last offset into the returned sender to let them finish.
/// Returns each subscriber's first node with its task.
async fn failover_subscribers(
    c: &TestCluster,
    channel: &str,
    n: usize,
) -> (
    tokio::sync::watch::Sender<u64>,
    Vec<(usize, tokio::task::JoinHandle<Tally>)>,
) {
    let endpoints: Vec<String> = c.nodes.iter().map(Node::ws).collect();
    let (target_tx, target_rx) = tokio::sync::watch::channel(0u64);
    let mut subs = Vec::new();
    for i in 0..n {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let first = i % endpoints.len();
        let handle = tokio::spawn(failover_subscriber(
            endpoints.clone(),
            first,
            format!("sub{i}"),
            channel.to_string(),
            target_rx.clone(),
            ready_tx,
        ));
        ready_rx.await.expect("subscribed");
        subs.push((first, handle));
    }
    (target_tx, subs)
}

/// Checks that the publisher's acknowledgements are offsets `1..=n`, lets
/// the [`failover_subscribers`] finish and checks that each got every
/// offset once, in order, in one epoch, always recovered. Returns each
/// subscriber's first node with its tally.
async fn every_offset_once(
    acked: Vec<u64>,
    target_tx: tokio::sync::watch::Sender<u64>,
    subs: Vec<(usize, tokio::task::JoinHandle<Tally>)>,
    n: u64,
) -> Vec<(usize, Tally)> {
    assert_eq!(
        acked,
        (1..=n).collect::<Vec<_>>(),
        "publish acknowledgements"
    );
    target_tx.send(n).unwrap();
    let mut out = Vec::new();
    for (node, handle) in subs {
        let tally = tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .unwrap_or_else(|_| panic!("a subscriber first on node {node} never got all {n}"))
            .unwrap();
        assert_eq!(
            tally.delivered,
            (1..=n).collect::<Vec<_>>(),
            "subscriber first on node {node}: every offset once, in order ({tally:?})"
        );
        assert_eq!(tally.epochs.len(), 1, "one epoch: {tally:?}");
        assert_eq!(tally.not_recovered, 0, "{tally:?}");
        out.push((node, tally));
    }
    out
}

/// A gateway node killed with SIGKILL while a publisher streams through a
/// surviving node: its clients fail over to the other nodes and recover every
/// missed publication; every subscriber ends with offsets `1..=N` once each
/// and in order, and every acknowledged publication reaches everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_clients_fail_over_and_recover_every_publication() {
    let mut c = TestCluster::start("failover", 3).await;
    let ch = "room:failover";
    // Two subscribers per node.
    let (target_tx, subs) = failover_subscribers(&c, ch, 6).await;
    // A steady stream through node 2's server API; node 0 is killed after
    // a third of it.
    const N: u64 = 300;
    let mut acked = Vec::new();
    for seq in 0..N {
        if seq == N / 3 {
            let pid = c.nodes[0].child.id().unwrap();
            std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .unwrap();
            let _ = c.nodes[0].child.wait().await;
        }
        let r = c.nodes[2]
            .api_ok("publish", json!({ "channel": ch, "data": { "seq": seq } }))
            .await;
        acked.push(r["offset"].as_u64().expect("offset"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (node, tally) in every_offset_once(acked, target_tx, subs, N).await {
        if node == 0 {
            assert!(
                tally.reconnects >= 1,
                "node 0's client failed over: {tally:?}"
            );
        } else {
            assert_eq!(tally.reconnects, 0, "survivors' clients stay: {tally:?}");
        }
    }
    c.stop().await;
}

/// A rolling restart: each node in turn gets SIGTERM while a publisher
/// streams through the others, drains (its clients are told to reconnect),
/// exits cleanly and comes back at the same address before the next one
/// goes. No publication is lost or duplicated: every subscriber ends with
/// offsets `1..=N` once each and in order, with recovery at every move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_with_drain_loses_no_publication() {
    let mut c = TestCluster::start("rolling", 3).await;
    let ch = "room:rolling";
    let (target_tx, subs) = failover_subscribers(&c, ch, 6).await;
    const N: u64 = 300;
    let per_node = N / 4;
    let mut acked = Vec::new();
    let mut restarting: Option<usize> = None;
    let config = c.config.clone();
    for seq in 0..N {
        // Node k restarts during the k-th quarter; the last quarter runs
        // on three restarted nodes.
        let phase = (seq / per_node) as usize;
        if seq % per_node == 0 && phase < 3 {
            let pid = c.nodes[phase].child.id().unwrap();
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .unwrap();
            restarting = Some(phase);
        }
        if seq % per_node == per_node / 2
            && let Some(k) = restarting.take()
        {
            let status = c.nodes[k].child.wait().await.unwrap();
            assert!(
                status.success(),
                "node {k} drains and exits cleanly: {status}"
            );
            let addr = c.nodes[k].addr.clone();
            c.nodes[k] = TestCluster::spawn_at(&config, &c.dir, k, None, addr);
            wait_up(&c.nodes[k].addr).await;
        }
        // Publish through a node that is not restarting; an idempotency key
        // makes a retry on another node safe.
        let mut offset = None;
        for attempt in 0..6 {
            let via = (seq as usize + attempt) % 3;
            if Some(via) == restarting {
                continue;
            }
            let r = c.nodes[via]
                .api(
                    "publish",
                    json!({ "channel": ch, "data": { "seq": seq }, "idempotency_key": format!("seq-{seq}") }),
                )
                .await;
            if let Some(o) = r["result"]["offset"].as_u64() {
                offset = Some(o);
                break;
            }
        }
        acked.push(offset.unwrap_or_else(|| panic!("publication {seq} acknowledged")));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (_, tally) in every_offset_once(acked, target_tx, subs, N).await {
        // Every subscriber's node was restarted at least once.
        assert!(tally.reconnects >= 1, "moved by a drain: {tally:?}");
    }
    c.stop().await;
}

/// The media node a room is on, by node index (node ids start with the
/// node's name, `node{i}-`).
async fn holder_of(c: &TestCluster, room: &str) -> usize {
    let got = c.nodes[0].api_ok("room_get", json!({ "room": room })).await;
    let id = got["room"]["node"]
        .as_str()
        .expect("room has a node")
        .to_string();
    (0..c.nodes.len())
        .find(|i| id.starts_with(&format!("node{i}-")))
        .unwrap_or_else(|| panic!("unknown node {id}"))
}

async fn video_flows(members: &[&crate::rtc::Member]) {
    let base: Vec<u64> = members
        .iter()
        .map(|m| m.media.stats().frames("video"))
        .collect();
    crate::rtc::wait("video to every participant", || {
        members
            .iter()
            .zip(&base)
            .all(|(m, b)| m.media.stats().frames("video") > b + 10)
    })
    .await;
}

/// Rooms live on one media node chosen by the cluster; clients connected to
/// a gateway-only node call through it. A drained media node hands its room
/// over (participants told `rtc.reconnect`, reason `moved`); a killed one
/// loses it to the survivor within the registry TTL (reason `node_lost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rooms_live_on_a_media_node_and_move_on_drain_and_on_loss() {
    use crate::rtc::{Member, wait};
    let media_roles = r#"["gateway","api","media"]"#;
    let mut c = TestCluster::start_with(
        "rooms",
        3,
        "[media]\nrequire_grants = false\n",
        &[r#"["gateway","api"]"#, media_roles, media_roles],
    )
    .await;
    let room = "standup";
    let created = c.nodes[0]
        .api_ok("room_create", json!({"room": room, "mode": "sfu"}))
        .await;
    let first = holder_of(&c, room).await;
    assert!(
        first == 1 || first == 2,
        "placed on a media node: {created}"
    );
    for n in &c.nodes {
        let got = n.api_ok("room_get", json!({ "room": room })).await;
        assert_eq!(got["room"]["node"], created["room"]["node"], "nodes agree");
    }
    // A second create is refused wherever it is asked.
    let again = c.nodes[2]
        .api("room_create", json!({"room": room, "mode": "sfu"}))
        .await;
    assert!(again.get("error").is_some(), "{again}");

    let (ca, ea) = c.nodes[0].connect("ann").await;
    let mut ann = Member::with(ca, ea, room).await;
    let (cb, eb) = c.nodes[0].connect("ben").await;
    let mut ben = Member::with(cb, eb, room).await;
    ann.join(room, true).await;
    ben.join(room, true).await;
    video_flows(&[&ann, &ben]).await;
    assert!(
        ann.saw("rtc.participant_joined")
            .iter()
            .any(|m| m["participant"] == ben.id.as_str()),
        "pushes from the media node reach the gateway's clients"
    );
    let list = c.nodes[0].api_ok("room_list", json!({})).await;
    let listed: Vec<&Value> = list["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == room || r["room"] == room)
        .collect();
    assert_eq!(listed.len(), 1, "{list}");
    assert_eq!(listed[0]["node"], created["room"]["node"]);

    // Drain the holder: its room moves to the other media node.
    let pid = c.nodes[first].child.id().unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    wait("rtc.reconnect after drain", || {
        !ann.saw("rtc.reconnect").is_empty() && !ben.saw("rtc.reconnect").is_empty()
    })
    .await;
    assert_eq!(ann.saw("rtc.reconnect")[0]["reason"], "moved");
    let status = c.nodes[first].child.wait().await.unwrap();
    assert!(status.success(), "drained node exits cleanly: {status}");
    ann.rejoin(room, true).await;
    ben.rejoin(room, true).await;
    let second = holder_of(&c, room).await;
    assert_eq!(second, 3 - first, "the room moved to the other media node");
    video_flows(&[&ann, &ben]).await;

    // Bring the drained node back, then kill -9 the new holder.
    let config = c.config.clone();
    c.nodes[first] = TestCluster::spawn_with(&config, &c.dir, first, Some(media_roles));
    wait_up(&c.nodes[first].addr).await;
    c.wait_nodes(0, 3).await;
    c.nodes[second].child.start_kill().unwrap();
    let _ = c.nodes[second].child.wait().await;
    wait("rtc.reconnect after node loss", || {
        ann.saw("rtc.reconnect").len() == 2 && ben.saw("rtc.reconnect").len() == 2
    })
    .await;
    assert_eq!(ann.saw("rtc.reconnect")[1]["reason"], "node_lost");
    ann.rejoin(room, true).await;
    ben.rejoin(room, true).await;
    assert_eq!(
        holder_of(&c, room).await,
        first,
        "re-placed on the survivor"
    );
    video_flows(&[&ann, &ben]).await;
    c.stop().await;
}

/// A 1:1 call across nodes: the callee's connections ring on every node,
/// an answer on another node reaches the ringing node, and the call's room
/// (placed on the only media node) opens to both users, whose peer-to-peer
/// signals cross three nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_ring_and_connect_across_nodes() {
    use crate::ringing::{code, next_msg};
    use crate::rtc::rpc;
    let c = TestCluster::start_with(
        "ring",
        3,
        "[media]\nrequire_grants = true\n",
        &[
            r#"["gateway","api"]"#,
            r#"["gateway","api","media"]"#,
            r#"["gateway","api"]"#,
        ],
    )
    .await;
    let (alice, mut alice_ev) = c.nodes[0].connect("alice").await;
    let (carol, _carol_ev) = c.nodes[0].connect("carol").await;
    let (_bob1, mut bob1_ev) = c.nodes[1].connect("bob").await;
    let (bob2, mut bob2_ev) = c.nodes[2].connect("bob").await;

    let r = rpc(&alice, "rtc.call", json!({"user": "bob"}))
        .await
        .expect("call");
    let call = r["call"].as_str().unwrap().to_string();
    let room = r["room"].as_str().unwrap().to_string();
    for events in [&mut bob1_ev, &mut bob2_ev] {
        let ring = next_msg(events, "rtc.ring").await;
        assert_eq!(ring["call"], call.as_str());
        assert_eq!(ring["from"]["user"], "alice");
    }
    // Only the callee answers, wherever the answer comes from.
    assert_eq!(
        code(rpc(&carol, "rtc.accept", json!({"call": call})).await),
        103
    );
    let accepted = rpc(&bob2, "rtc.accept", json!({"call": call}))
        .await
        .unwrap();
    assert_eq!(accepted["room"], room.as_str());
    assert_eq!(
        next_msg(&mut alice_ev, "rtc.accepted").await["call"],
        call.as_str()
    );
    assert_eq!(
        next_msg(&mut bob1_ev, "rtc.ring_ended").await["reason"],
        "answered_elsewhere"
    );

    // The room is open to both users on the media node, to nobody else.
    let a = rpc(&alice, "rtc.join", json!({"room": room}))
        .await
        .unwrap();
    let b = rpc(&bob2, "rtc.join", json!({"room": room})).await.unwrap();
    assert_eq!(a["mode"], "p2p");
    assert_eq!(b["mode"], "p2p");
    assert_eq!(
        code(rpc(&carol, "rtc.join", json!({"room": room})).await),
        103
    );
    let joined = next_msg(&mut alice_ev, "rtc.participant_joined").await;
    assert_eq!(joined["participant"], b["participant"]);
    rpc(
        &alice,
        "rtc.signal",
        json!({"room": room, "to": b["participant"], "data": {"sdp": "offer"}}),
    )
    .await
    .unwrap();
    let sig = next_msg(&mut bob2_ev, "rtc.signal").await;
    assert_eq!(sig["from"], a["participant"]);
    assert_eq!(sig["data"]["sdp"], "offer");
    let got = c.nodes[2].api_ok("room_get", json!({"room": room})).await;
    assert!(
        got["room"]["node"].as_str().unwrap().starts_with("node1-"),
        "{got}"
    );
    assert_eq!(got["room"]["num_participants"], 2);
    // Bob's connection goes: the media node hears it from bob's gateway.
    bob2.close().await;
    let left = next_msg(&mut alice_ev, "rtc.participant_left").await;
    assert_eq!(left["participant"], b["participant"]);
    c.stop().await;
}
