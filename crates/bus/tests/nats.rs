//! NatsBus and NodeRegistry against the machine's NATS server
//! (127.0.0.1:4222, JetStream enabled). Every test uses its own subject
//! prefix and KV buckets, so tests run in parallel without seeing each other.

mod support;

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use parking_lot::Mutex;
use switchboard_bus::{
    Bus, BusError, BusHandler, BusMessage, Expect, NatsBus, NatsConfig, NodeInfo, NodeRegistry,
    RegistryConfig, RequestHandler,
};
use switchboard_core::{Publication, PublisherInfo};

/// Upper bound of every wait: only reached when something is broken.
const PATIENCE: Duration = Duration::from_secs(20);

fn unique(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn config(prefix: &str, node: &str) -> NatsConfig {
    NatsConfig {
        urls: vec!["nats://127.0.0.1:4222".into()],
        subject_prefix: prefix.into(),
        node_id: node.into(),
        ..NatsConfig::default()
    }
}

async fn node(prefix: &str, id: &str) -> (NatsBus, Arc<Collect>) {
    support::services::ensure_nats();
    let bus = NatsBus::connect(config(prefix, id))
        .await
        .unwrap_or_else(|e| panic!("NATS must run on 127.0.0.1:4222 for these tests: {e}"));
    let sink = Arc::new(Collect::default());
    bus.set_handler(sink.clone());
    (bus, sink)
}

/// Records what the bus delivers: (channel, offset or 0, data).
#[derive(Default)]
struct Collect {
    got: Mutex<Vec<(String, u64, Bytes)>>,
    notify: tokio::sync::Notify,
}

impl BusHandler for Collect {
    fn handle(&self, msg: BusMessage) {
        let entry = match &msg {
            BusMessage::Publication {
                channel,
                publication,
            } => (
                channel.to_string(),
                publication.offset,
                publication.data.clone(),
            ),
            BusMessage::Join { channel, info } => (
                channel.to_string(),
                0,
                Bytes::from(format!("join:{}", info.user)),
            ),
            BusMessage::Leave { channel, info } => (
                channel.to_string(),
                0,
                Bytes::from(format!("leave:{}", info.user)),
            ),
        };
        self.got.lock().push(entry);
        self.notify.notify_waiters();
    }
}

impl Collect {
    fn of(&self, channel: &str) -> Vec<u64> {
        self.got
            .lock()
            .iter()
            .filter(|(c, _, _)| c == channel)
            .map(|(_, o, _)| *o)
            .collect()
    }

    fn has(&self, channel: &str, data: &str) -> bool {
        self.got
            .lock()
            .iter()
            .any(|(c, _, d)| c == channel && d.as_ref() == data.as_bytes())
    }
}

/// Polls `cond` until it holds; panics with `what` after [`PATIENCE`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async condition until it holds; panics after [`PATIENCE`].
async fn wait_until_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !cond().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn publication(channel: &str, offset: u64, data: &str) -> BusMessage {
    BusMessage::Publication {
        channel: channel.into(),
        publication: Arc::new(Publication {
            offset,
            data: Bytes::from(data.to_owned()),
            info: Some(PublisherInfo {
                user: "u".into(),
                client: "c".into(),
                ..PublisherInfo::default()
            }),
            tags: [("t".to_owned(), offset.to_string())].into(),
            time_ms: 1_700_000_000_000 + i64::try_from(offset).unwrap_or(0),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_exchange_publications_in_order() {
    let prefix = unique("t");
    let (a, sink_a) = node(&prefix, "a").await;
    let (b, sink_b) = node(&prefix, "b").await;
    // Names that are not valid subject tokens as they are.
    let ch_a = "chat:lobby.*>";
    let ch_b = "dm:ü#1 2";
    for bus in [&a, &b] {
        bus.subscribe_channel(ch_a).await.expect("subscribe");
        bus.subscribe_channel(ch_b).await.expect("subscribe");
    }
    const N: u64 = 500;
    let pa = {
        let a = a.clone();
        tokio::spawn(async move {
            for i in 1..=N {
                a.publish(publication(ch_a, i, &format!("a{i}")))
                    .await
                    .expect("publish");
            }
        })
    };
    let pb = {
        let b = b.clone();
        tokio::spawn(async move {
            for i in 1..=N {
                b.publish(publication(ch_b, i, &format!("b{i}")))
                    .await
                    .expect("publish");
            }
        })
    };
    pa.await.expect("task");
    pb.await.expect("task");
    let want: Vec<u64> = (1..=N).collect();
    for (name, sink) in [("a", &sink_a), ("b", &sink_b)] {
        wait_until(&format!("node {name} to get both channels"), || {
            sink.of(ch_a).len() as u64 >= N && sink.of(ch_b).len() as u64 >= N
        })
        .await;
        assert_eq!(
            sink.of(ch_a),
            want,
            "node {name}: {ch_a} in publish order, once"
        );
        assert_eq!(
            sink.of(ch_b),
            want,
            "node {name}: {ch_b} in publish order, once"
        );
    }
    // The whole publication crosses intact.
    let got = sink_b
        .got
        .lock()
        .iter()
        .find(|(c, o, _)| c == ch_a && *o == 7)
        .cloned()
        .expect("publication 7");
    assert_eq!(got.2, Bytes::from("a7"));

    // Join and leave travel on the same subject.
    a.publish(BusMessage::Join {
        channel: ch_b.into(),
        info: PublisherInfo {
            user: "ann".into(),
            ..PublisherInfo::default()
        },
    })
    .await
    .expect("join");
    wait_until("join at b", || sink_b.has(ch_b, "join:ann")).await;
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_receives_only_the_channels_it_subscribed() {
    let prefix = unique("t");
    let (a, sink_a) = node(&prefix, "a").await;
    let (b, _sink_b) = node(&prefix, "b").await;
    a.subscribe_channel("wanted").await.expect("subscribe");
    a.subscribe_channel("wanted")
        .await
        .expect("subscribe twice");
    a.subscribe_channel("marker").await.expect("subscribe");
    assert_eq!(a.subscribed_channels(), 2);

    b.publish(publication("unwanted", 1, "x"))
        .await
        .expect("publish");
    b.publish(publication("wanted", 1, "w1"))
        .await
        .expect("publish");
    b.publish(publication("marker", 1, "m1"))
        .await
        .expect("publish");
    wait_until("marker 1", || sink_a.has("marker", "m1")).await;
    // Per publisher, order is kept: everything before the marker is in.
    assert_eq!(sink_a.of("wanted"), vec![1]);
    assert!(sink_a.of("unwanted").is_empty());

    // One unsubscribe of two: still subscribed.
    a.unsubscribe_channel("wanted").await.expect("unsubscribe");
    b.publish(publication("wanted", 2, "w2"))
        .await
        .expect("publish");
    b.publish(publication("marker", 2, "m2"))
        .await
        .expect("publish");
    wait_until("marker 2", || sink_a.has("marker", "m2")).await;
    assert_eq!(sink_a.of("wanted"), vec![1, 2]);

    // The last unsubscribe stops delivery.
    a.unsubscribe_channel("wanted").await.expect("unsubscribe");
    assert_eq!(a.subscribed_channels(), 1);
    // Let the UNSUB reach the server before b publishes.
    a.client().flush().await.expect("flush");
    b.publish(publication("wanted", 3, "w3"))
        .await
        .expect("publish");
    b.publish(publication("marker", 3, "m3"))
        .await
        .expect("publish");
    wait_until("marker 3", || sink_a.has("marker", "m3")).await;
    assert_eq!(sink_a.of("wanted"), vec![1, 2]);

    // Unbalanced unsubscribe is harmless; resubscribing works again.
    a.unsubscribe_channel("wanted")
        .await
        .expect("extra unsubscribe");
    a.subscribe_channel("wanted").await.expect("resubscribe");
    b.publish(publication("wanted", 4, "w4"))
        .await
        .expect("publish");
    wait_until("w4", || sink_a.has("wanted", "w4")).await;
    assert_eq!(sink_a.of("wanted"), vec![1, 2, 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_subscribe_and_unsubscribe_keep_one_subscription() {
    let prefix = unique("t");
    let (a, sink_a) = node(&prefix, "a").await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            a.subscribe_channel("busy").await.expect("subscribe");
            if i % 2 == 0 {
                a.unsubscribe_channel("busy").await.expect("unsubscribe");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    // 32 references left: exactly one NATS subscription, so each message
    // arrives once.
    assert_eq!(a.subscribed_channels(), 1);
    a.publish(publication("busy", 1, "once"))
        .await
        .expect("publish");
    wait_until("delivery", || !sink_a.of("busy").is_empty()).await;
    a.subscribe_channel("marker").await.expect("subscribe");
    a.publish(publication("marker", 1, "m"))
        .await
        .expect("publish");
    wait_until("marker", || sink_a.has("marker", "m")).await;
    assert_eq!(sink_a.of("busy"), vec![1]);
}

#[tokio::test]
async fn disconnected_bus_fails_fast_and_reports_health() {
    // Nothing listens on port 1.
    let mut cfg = config(&unique("t"), "lonely");
    cfg.urls = vec!["nats://127.0.0.1:1".into()];
    cfg.connect_timeout = Duration::from_millis(500);

    // Without retry, connecting fails.
    let err = NatsBus::connect(cfg.clone()).await.expect_err("no server");
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");

    // With retry, the node gets a disconnected bus that keeps trying.
    cfg.retry_initial_connect = true;
    let bus = tokio::time::timeout(PATIENCE, NatsBus::connect(cfg))
        .await
        .expect("connect returns at once with retry_initial_connect")
        .expect("bus");
    assert!(!bus.is_connected());
    assert!(!bus.is_healthy());
    assert!(!*bus.health().borrow());

    let publish = tokio::time::timeout(PATIENCE, bus.publish(publication("ch", 1, "x")))
        .await
        .expect("publish does not wait for the server");
    assert!(
        matches!(publish, Err(BusError::Unavailable(_))),
        "{publish:?}"
    );
    let request = tokio::time::timeout(PATIENCE, bus.request("other", "ping", Bytes::new()))
        .await
        .expect("request does not wait");
    assert!(
        matches!(request, Err(BusError::Unavailable(_))),
        "{request:?}"
    );
    // Interest is recorded for when the connection comes.
    tokio::time::timeout(PATIENCE, bus.subscribe_channel("ch"))
        .await
        .expect("subscribe does not wait")
        .expect("subscribe while disconnected is recorded");
    assert_eq!(bus.subscribed_channels(), 1);
}

#[tokio::test]
async fn connected_bus_is_healthy_and_config_is_checked() {
    let prefix = unique("t");
    let (a, _) = node(&prefix, "a").await;
    assert!(a.is_connected());
    assert!(a.is_healthy());
    assert!(*a.health().borrow());
    assert_eq!(a.channel_subject("chat:x"), format!("{prefix}.ch.chat~3Ax"));
    assert_eq!(
        RegistryConfig::for_bus(&a).nodes_bucket,
        format!("{prefix}_nodes")
    );

    let mut bad = config(&prefix, "");
    assert!(matches!(
        NatsBus::connect(bad.clone()).await,
        Err(BusError::Rejected(_))
    ));
    bad.node_id = "n".into();
    bad.subject_prefix = "a.b".into();
    assert!(matches!(
        NatsBus::connect(bad).await,
        Err(BusError::Rejected(_))
    ));

    // Over max_payload: rejected, not "unavailable".
    a.subscribe_channel("big").await.expect("subscribe");
    let max = a.client().server_info().max_payload;
    let huge = "x".repeat(max + 1);
    let res = a.publish(publication("big", 1, &huge)).await;
    assert!(matches!(res, Err(BusError::Rejected(_))), "{res:?}");
}

struct Echo(&'static str);

#[async_trait::async_trait]
impl RequestHandler for Echo {
    async fn handle(&self, method: &str, payload: Bytes) -> Result<Bytes, String> {
        match method {
            "echo" => Ok(Bytes::from(format!(
                "{}:{}",
                self.0,
                String::from_utf8_lossy(&payload)
            ))),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Bytes::new())
            }
            other => Err(format!("unknown method {other}")),
        }
    }
}

/// Records broadcasts.
struct Broadcasts(Arc<Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl RequestHandler for Broadcasts {
    async fn handle(&self, method: &str, payload: Bytes) -> Result<Bytes, String> {
        self.0
            .lock()
            .push(format!("{method}:{}", String::from_utf8_lossy(&payload)));
        Ok(Bytes::new())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_directed_requests_and_broadcasts() {
    let prefix = unique("t");
    let (a, _) = node(&prefix, "node-a").await;
    let (b, _) = node(&prefix, "node.b:1").await;
    b.set_request_handler(Arc::new(Echo("b")));

    let reply = a
        .request("node.b:1", "echo", Bytes::from_static(b"hi"))
        .await
        .expect("request");
    assert_eq!(reply, Bytes::from_static(b"b:hi"));

    let err = a
        .request("node.b:1", "nope", Bytes::new())
        .await
        .expect_err("remote error");
    assert_eq!(err, BusError::Remote("unknown method nope".into()));

    let err = a
        .request("ghost", "echo", Bytes::new())
        .await
        .expect_err("no such node");
    assert_eq!(err, BusError::NoResponders("ghost".into()));

    let err = a
        .request_with_timeout("node.b:1", "slow", Bytes::new(), Duration::from_millis(200))
        .await
        .expect_err("timeout");
    assert_eq!(err, BusError::Timeout);

    // A node without a handler answers "not ready" rather than timing out.
    let err = b
        .request("node-a", "echo", Bytes::new())
        .await
        .expect_err("not ready");
    assert_eq!(err, BusError::Remote("node not ready".into()));

    // Broadcasts reach every node, the sender included.
    let (c, _) = node(&prefix, "node-c").await;
    let seen_a = Arc::new(Mutex::new(Vec::new()));
    let seen_c = Arc::new(Mutex::new(Vec::new()));
    a.set_request_handler(Arc::new(Broadcasts(seen_a.clone())));
    c.set_request_handler(Arc::new(Broadcasts(seen_c.clone())));
    a.broadcast("disconnect.user", Bytes::from_static(b"42"))
        .await
        .expect("broadcast");
    wait_until("broadcast at a and c", || {
        !seen_a.lock().is_empty() && !seen_c.lock().is_empty()
    })
    .await;
    assert_eq!(*seen_c.lock(), vec!["disconnect.user:42".to_owned()]);
    assert_eq!(*seen_a.lock(), vec!["disconnect.user:42".to_owned()]);
}

fn registry_config(ttl: Duration) -> RegistryConfig {
    let tag = unique("");
    RegistryConfig {
        nodes_bucket: format!("test_nodes_{tag}"),
        placement_bucket: format!("test_place_{tag}"),
        ttl,
        heartbeat: None,
        replicas: 1,
    }
}

async fn drop_buckets(bus: &NatsBus, config: &RegistryConfig) {
    let js = async_nats::jetstream::new(bus.client().clone());
    let _ = js.delete_key_value(&config.nodes_bucket).await;
    let _ = js.delete_key_value(&config.placement_bucket).await;
}

fn info(id: &str, roles: &[&str]) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        address: format!("http://{id}:8000"),
        ..NodeInfo::default()
    }
}

async fn ids(registry: &NodeRegistry) -> Vec<String> {
    registry
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|n| n.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_lists_live_nodes_and_expires_silent_ones() {
    let prefix = unique("t");
    let (a, _) = node(&prefix, "gw-1").await;
    let (b, _) = node(&prefix, "media-1").await;
    let cfg = registry_config(Duration::from_secs(2));
    let reg_a = NodeRegistry::open(&a, cfg.clone()).await.expect("open");
    let reg_b = NodeRegistry::open(&b, cfg.clone())
        .await
        .expect("open again");

    let me_a = reg_a
        .register(info("gw-1", &["gateway"]))
        .await
        .expect("register");
    let me_b = reg_b
        .register(info("media-1", &["media"]))
        .await
        .expect("register");
    assert_eq!(ids(&reg_a).await, vec!["gw-1", "media-1"]);
    let listed = reg_b.list().await.expect("list");
    assert!(listed[1].has_role("media"));
    assert_eq!(listed[1].address, "http://media-1:8000");
    assert!(listed[1].updated_ms > 0);

    // Updates are written at once.
    me_b.set_load(0.75);
    wait_until_async("load update", || async {
        reg_a
            .get("media-1")
            .await
            .expect("get")
            .is_some_and(|n| n.load == 0.75)
    })
    .await;

    // Heartbeats keep a node alive past its TTL...
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ids(&reg_a).await, vec!["gw-1", "media-1"]);

    // ...and a node that stops heartbeating (a crash) expires.
    drop(me_b);
    wait_until_async("media-1 to expire", || async {
        ids(&reg_a).await == vec!["gw-1".to_owned()]
    })
    .await;
    assert_eq!(reg_a.get("media-1").await.expect("get"), None);

    // Graceful deregistration removes it at once.
    me_a.deregister().await.expect("deregister");
    assert!(ids(&reg_b).await.is_empty());
    drop_buckets(&a, &cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_is_compare_and_set() {
    let prefix = unique("t");
    let (a, _) = node(&prefix, "gw-1").await;
    let (b, _) = node(&prefix, "gw-2").await;
    let cfg = registry_config(Duration::from_secs(10));
    let reg_a = NodeRegistry::open(&a, cfg.clone()).await.expect("open");
    let reg_b = NodeRegistry::open(&b, cfg.clone()).await.expect("open");
    let key = "room:standup.*";
    assert_eq!(reg_a.placement(key).await.expect("get"), None);

    // Many gateways on two connections race to place the same room.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let reg = if i % 2 == 0 {
            reg_a.clone()
        } else {
            reg_b.clone()
        };
        tasks.push(tokio::spawn(async move {
            reg.place(key, Bytes::from(format!("media-{i}")), Expect::Absent)
                .await
                .expect("place")
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    let winners: Vec<_> = results.iter().filter(|p| p.won).collect();
    assert_eq!(winners.len(), 1, "exactly one winner: {results:?}");
    let winner = winners[0].clone();
    for p in &results {
        assert_eq!(p.value, winner.value, "everyone agrees on the winner");
        assert_eq!(p.revision, winner.revision);
    }
    let stored = reg_b.placement(key).await.expect("get").expect("placed");
    assert_eq!(
        (stored.value, stored.revision),
        (winner.value.clone(), winner.revision)
    );

    // Moving a room off a dead node: two movers with the same revision,
    // one wins.
    let first = reg_a
        .place(
            key,
            Bytes::from("media-new-1"),
            Expect::Revision(winner.revision),
        )
        .await
        .expect("move");
    let second = reg_b
        .place(
            key,
            Bytes::from("media-new-2"),
            Expect::Revision(winner.revision),
        )
        .await
        .expect("move");
    assert!(first.won);
    assert!(!second.won);
    assert_eq!(second.value, Bytes::from("media-new-1"));
    assert_eq!(second.revision, first.revision);

    // A stale unplace fails, a current one removes the record.
    assert!(!reg_b.unplace(key, winner.revision).await.expect("unplace"));
    assert!(reg_b.unplace(key, first.revision).await.expect("unplace"));
    assert_eq!(reg_a.placement(key).await.expect("get"), None);
    let again = reg_a
        .place(key, Bytes::from("media-3"), Expect::Absent)
        .await
        .expect("place after removal");
    assert!(again.won);
    let all = reg_b.placements().await.expect("all");
    assert_eq!(all.len(), 1);
    assert_eq!(all[key].value, Bytes::from("media-3"));
    drop_buckets(&a, &cfg).await;
}

/// Measures what the per-channel subject design costs (printed; run with
/// `cargo nextest run -p switchboard-bus --run-ignored all measure_ --no-capture`):
/// subscribing many channels, and delivery throughput with per-channel
/// subscriptions versus one wildcard subscription receiving everything
/// (what a sharded/wildcard scheme makes every node do).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn measure_subscription_designs() {
    const CHANNELS: usize = 10_000;
    const MESSAGES: u64 = 100_000;
    let prefix = unique("m");
    let (a, sink_a) = node(&prefix, "a").await;
    let (b, _) = node(&prefix, "b").await;

    let started = Instant::now();
    for c in 0..CHANNELS {
        a.subscribe_channel(&format!("chan:{c}"))
            .await
            .expect("subscribe");
    }
    let elapsed = started.elapsed();
    println!(
        "subscribe_channel x{CHANNELS} (each confirmed by the server): {elapsed:?}, {:.0}/s",
        CHANNELS as f64 / elapsed.as_secs_f64()
    );

    // Delivery through per-channel subscriptions: b publishes, a receives.
    let started = Instant::now();
    for i in 0..MESSAGES {
        let c = i as usize % CHANNELS;
        b.publish(publication(&format!("chan:{c}"), i + 1, "{\"t\":1}"))
            .await
            .expect("publish");
    }
    wait_until("all delivered", || {
        sink_a.got.lock().len() as u64 >= MESSAGES
    })
    .await;
    let elapsed = started.elapsed();
    println!(
        "per-channel: {MESSAGES} messages over {CHANNELS} subjects in {elapsed:?}: {:.0} msg/s",
        MESSAGES as f64 / elapsed.as_secs_f64()
    );

    // The same traffic through one wildcard subscription on a third
    // connection, decoding and filtering every message locally.
    let (c_bus, _) = node(&prefix, "c").await;
    let mut wildcard = c_bus
        .client()
        .subscribe(format!("{prefix}.ch.>"))
        .await
        .expect("subscribe");
    c_bus.client().flush().await.expect("flush");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counter = tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut n = 0u64;
        while let Some(_m) = wildcard.next().await {
            n += 1;
            if n == MESSAGES {
                break;
            }
        }
        n
    });
    let started = Instant::now();
    for i in 0..MESSAGES {
        let c = i as usize % CHANNELS;
        b.publish(publication(&format!("chan:{c}"), i + 1, "{\"t\":1}"))
            .await
            .expect("publish");
    }
    let n = tokio::time::timeout(PATIENCE, counter)
        .await
        .expect("wildcard delivery")
        .expect("task");
    let elapsed = started.elapsed();
    println!(
        "wildcard: {n} messages in {elapsed:?}: {:.0} msg/s",
        n as f64 / elapsed.as_secs_f64()
    );
}
