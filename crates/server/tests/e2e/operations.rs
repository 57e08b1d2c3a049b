//! Health, metrics, graceful shutdown and the `switchboard` binary.

use crate::common::*;
use std::process::{Command, Stdio};
use std::time::Duration;
use switchboard_client::{ClientOptions, Event, SubscribeOptions};
use switchboard_proto::codec::Encoding;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

#[tokio::test]
async fn health_readiness_and_metrics() {
    let s = TestServer::dev("").await;
    let get = |p: &str| reqwest::get(s.http(p));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let (c, _e) = s.connect("alice", Encoding::Json).await;
    c.subscribe("m", SubscribeOptions::default()).await.unwrap();
    c.publish("m", b"{}".to_vec()).await.unwrap();
    let _ = c.rpc("nope", b"{}".to_vec()).await;
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    for name in [
        "switchboard_connections",
        "switchboard_subscriptions",
        "switchboard_commands_total",
        "switchboard_command_duration_seconds_bucket",
        "switchboard_publications_total",
        "switchboard_messages_sent_total",
        "switchboard_transport_bytes_out_total",
    ] {
        assert!(text.contains(name), "metrics lack {name}");
    }
    assert!(
        text.contains(r#"method="rpc",result="104""#),
        "command results are labelled"
    );
    s.stop().await;
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect() {
    let s = TestServer::dev("").await;
    let (_c, mut e) = s
        .connect_with(ClientOptions::with_token(token("alice")))
        .await;
    let handle = tokio::spawn(async move { s.stop().await });
    match next_event(&mut e, |ev| matches!(ev, Event::Disconnected { .. })).await {
        Event::Disconnected { code, .. } => assert_eq!(code, 3001, "shutdown, reconnect allowed"),
        _ => unreachable!(),
    }
    handle.await.unwrap();
}

fn run(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run switchboard")
}

#[test]
fn token_create_prints_verifiable_tokens() {
    let out = run(
        &[
            "token",
            "create",
            "--dev",
            "--user",
            "alice",
            "--ttl",
            "1h",
            "--channels",
            "a,b",
            "--info",
            r#"{"name":"Alice"}"#,
            "--json",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tok = v["token"].as_str().unwrap();
    let verifier = switchboard_auth::Verifier::new(&switchboard_auth::VerifierConfig {
        hmac_secret: Some(SECRET.into()),
        ..Default::default()
    })
    .unwrap();
    let claims = verifier.verify_connection(tok, now()).unwrap();
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.channels, vec!["a", "b"]);
    assert!(claims.exp.unwrap() > now() + 3500);
    let out = run(
        &[
            "token",
            "create",
            "--dev",
            "--user",
            "alice",
            "--channel",
            "chat:1",
        ],
        &[],
    );
    let tok = String::from_utf8(out.stdout).unwrap();
    let claims = verifier
        .verify_subscription(tok.trim(), "chat:1", now())
        .unwrap();
    assert_eq!(claims.channel, "chat:1");
    // The configured secret is used.
    let out = run(
        &["token", "create", "--user", "bob"],
        &[("SWITCHBOARD_TOKEN_HMAC_SECRET", "other")],
    );
    let tok = String::from_utf8(out.stdout).unwrap();
    assert!(verifier.verify_connection(tok.trim(), now()).is_err());
    // Bad input is refused clearly.
    let out = run(
        &["token", "create", "--dev", "--user", "a", "--info", "{oops"],
        &[],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--info"));
}

#[test]
fn invalid_configuration_is_refused_naming_the_key() {
    let dir = temp_dir("badcfg");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[channel.namespaces.chat]\nhistroy_size = 10\n").unwrap();
    let out = run(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            dir.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("channel.namespaces.chat") && err.contains("histroy_size"),
        "{err}"
    );
    let out = run(
        &["serve", "--dev", "--data-dir", dir.to_str().unwrap()],
        &[("SWITCHBOARD_CLIENT_PING_INTERVAL", "often")],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("client.ping_interval"));
    let out = run(
        &["config", "check", "--dev", "--json"],
        &[("SWITCHBOARD_HTTP_ADDR", "127.0.0.1:9999")],
    );
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["http"]["addr"], "127.0.0.1:9999");
    assert_eq!(v["token"]["hmac_secret"], "<hidden>");
}

#[test]
fn config_check_hides_every_secret() {
    let dir = temp_dir("cfgsecrets");
    let path = dir.join("secrets.toml");
    std::fs::write(
        &path,
        "[media.turn]\nurls = [\"turn:127.0.0.1:3478\"]\nsecret = \"turn-secret-1\"\n\
         [[webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"hook-secret-2\"\n\
         [cluster]\nbus = \"nats\"\nstore = \"postgres\"\n\
         [cluster.nats]\nurls = [\"nats://127.0.0.1:4222\"]\nuser = \"sb\"\npassword = \"nats-secret-3\"\n\
         [cluster.postgres]\nurl = \"postgres://sb:pg-secret-4@127.0.0.1:5432/sb\"\n",
    )
    .unwrap();
    let out = run(
        &[
            "config",
            "check",
            "--dev",
            "--config",
            path.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for secret in [
        "turn-secret-1",
        "hook-secret-2",
        "nats-secret-3",
        "pg-secret-4",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
    }
    // What is not secret stays readable.
    assert!(
        stdout.contains("postgres://sb:<hidden>@127.0.0.1:5432/sb"),
        "{stdout}"
    );
}

#[tokio::test]
async fn binary_serves_and_exits_cleanly_on_sigterm() {
    let dir = temp_dir("bin");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--dev",
            "--http-addr",
            &addr,
            "--data-dir",
            dir.to_str().unwrap(),
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let url = format!("http://{addr}/healthz");
    let mut up = false;
    for _ in 0..100 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "server came up");
    let ws = format!("ws://{addr}/connection/websocket");
    let (c, mut e) =
        switchboard_client::Client::connect(&ws, ClientOptions::with_token(token("alice")))
            .await
            .unwrap();
    c.subscribe("x", SubscribeOptions::default()).await.unwrap();
    let pid = child.id().unwrap() as i32;
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    match next_event(&mut e, |ev| matches!(ev, Event::Disconnected { .. })).await {
        Event::Disconnected { code, .. } => assert_eq!(code, 3001),
        _ => unreachable!(),
    }
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "exit status {status:?}");
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("dev-api-key") && stdout.contains("dev-token-secret"),
        "{stdout}"
    );
    // JSON logs on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "json log line: {first}"
    );
    // The store was flushed: history is there after restart.
    let _ = std::fs::remove_dir_all(&dir);
}

fn run_cli(args: Vec<String>, stdin: Option<&'static str>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs the CLI off the async workers (the server runs on this runtime).
async fn cli(
    args: &[&str],
    remote: &[String],
    stdin: Option<&'static str>,
) -> std::process::Output {
    let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    all.extend(remote.iter().cloned());
    tokio::task::spawn_blocking(move || run_cli(all, stdin))
        .await
        .unwrap()
}

async fn cli_json(
    args: &[&str],
    remote: &[String],
    stdin: Option<&'static str>,
) -> serde_json::Value {
    let out = cli(args, remote, stdin).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn apikey_and_user_commands_manage_a_running_server() {
    let s = TestServer::dev(
        "[auth.password_hashing]\nmemory_kib = 8\niterations = 1\nparallelism = 1\n",
    )
    .await;
    let url = format!("http://{}", s.addr());
    let remote = vec![
        "--url".to_string(),
        url.clone(),
        "--api-key".to_string(),
        API_KEY.to_string(),
    ];
    let created = cli_json(
        &["apikey", "create", "--name", "ci", "--json"],
        &remote,
        None,
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    // The new key works on its own.
    let r = reqwest::Client::new()
        .post(s.http("/api/info"))
        .header("X-API-Key", &secret)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list = cli_json(&["apikey", "list", "--json"], &remote, None).await;
    assert!(
        list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["id"] == id.as_str())
    );
    let user = cli_json(
        &["user", "create", "--username", "dave", "--json"],
        &remote,
        Some("long enough password\n"),
    )
    .await;
    assert_eq!(user["user"]["username"], "dave");
    cli_json(&["user", "disable", "dave", "--json"], &remote, None).await;
    let users = cli_json(&["user", "list", "--json"], &remote, None).await;
    assert_eq!(users["users"][0]["disabled"], true);
    cli_json(&["apikey", "revoke", &id, "--json"], &remote, None).await;
    // A wrong key is reported clearly.
    let bad = vec![
        "--url".to_string(),
        url,
        "--api-key".to_string(),
        "nope".to_string(),
    ];
    let out = cli(&["apikey", "list"], &bad, None).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the API key"));
    s.stop().await;
}
