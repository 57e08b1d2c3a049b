//! The `switchboard` command: `serve`, `migrate`, `nodes`, `token create`,
//! `config check`.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_auth::{ConnectionTokenSpec, Minter};
use switchboard_server::Server;
use switchboard_server::config::{
    BusKind, Config, DEV_API_KEY, DEV_TOKEN_SECRET, LogFormat, Sources, StoreKind,
};

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Real-time messaging and calls server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Create tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Manage server API keys (through the server API of a running server).
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// Manage built-in user accounts (through the server API).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run the PostgreSQL schema migrations of `cluster.postgres` and exit.
    Migrate {
        #[command(flatten)]
        common: ConfigArgs,
    },
    /// List the live nodes of the cluster (from the node registry on NATS).
    Nodes {
        #[command(flatten)]
        common: ConfigArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Embedded defaults for a laptop: dev API key and token secret, every
    /// channel open with history and presence, loopback only.
    #[arg(long)]
    dev: bool,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// HTTP listen address (overrides http.addr).
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<String>,
    /// Directory of the embedded store (overrides node.data_dir).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format: text or json (overrides log.format).
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Log filter, e.g. info or switchboard=debug (overrides log.level).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Roles this node runs, comma-separated: gateway, media, api, auth or
    /// all (overrides cluster.roles).
    #[arg(long, value_name = "ROLES", value_delimiter = ',')]
    roles: Vec<String>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a connection token, or a subscription token with --channel.
    Create(TokenArgs),
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// User id (`sub` claim).
    #[arg(long)]
    user: String,
    /// Lifetime, e.g. 1h or 30m; omit for a token that never expires.
    #[arg(long, value_parser = parse_duration)]
    ttl: Option<Duration>,
    /// Channels to subscribe server-side (`channels` claim), comma-separated.
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
    /// Connection info (`info` claim), JSON.
    #[arg(long)]
    info: Option<String>,
    /// Create a subscription token for this channel instead.
    #[arg(long)]
    channel: Option<String>,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

/// Where the running server is and how to authenticate to it.
#[derive(Args)]
struct RemoteArgs {
    #[command(flatten)]
    common: ConfigArgs,
    /// Server base URL (default: http://<http.addr> from the configuration).
    #[arg(long)]
    url: Option<String>,
    /// Server API key (default: the first configured key).
    #[arg(long, env = "SWITCHBOARD_CLI_API_KEY")]
    api_key: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum ApikeyCommand {
    /// Create a key; its secret is printed once.
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (without secrets).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Revoke a key by id.
    Revoke {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Key id (sbk_…).
        id: String,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user; the password is read from stdin unless --password is given.
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Login name.
        #[arg(long)]
        username: String,
        /// Password (prefer stdin: command lines end up in shell history).
        #[arg(long)]
        password: Option<String>,
        /// Grants as JSON, e.g. '{"channels":[{"pattern":"chat:*","subscribe":true,"publish":true}]}'.
        #[arg(long)]
        grants: Option<String>,
    },
    /// List users.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Disable a user: no login, no refresh, live connections closed.
    Disable {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Login name.
        username: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it as TOML (secrets hidden).
    Check {
        #[command(flatten)]
        common: ConfigArgs,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    switchboard_core::duration::parse(s)
}

fn load(common: &ConfigArgs, flags: Vec<(String, toml::Value)>) -> anyhow::Result<Config> {
    let file = match &common.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Some((path.clone(), text))
        }
        None => None,
    };
    let sources = Sources {
        dev: common.dev,
        file,
        env: std::env::vars().collect(),
        flags,
    };
    Ok(Config::load(&sources)?)
}

fn init_logs(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut flags = Vec::new();
    if let Some(a) = args.http_addr {
        flags.push(("http.addr".to_string(), toml::Value::String(a)));
    }
    if let Some(d) = args.data_dir {
        flags.push((
            "node.data_dir".to_string(),
            toml::Value::String(d.display().to_string()),
        ));
    }
    if let Some(f) = args.log_format {
        flags.push(("log.format".to_string(), toml::Value::String(f)));
    }
    if let Some(l) = args.log_level {
        flags.push(("log.level".to_string(), toml::Value::String(l)));
    }
    if !args.roles.is_empty() {
        let roles = args
            .roles
            .iter()
            .map(|r| toml::Value::String(r.trim().to_string()))
            .collect();
        flags.push(("cluster.roles".to_string(), toml::Value::Array(roles)));
    }
    let mut config = load(&args.common, flags)?;
    init_logs(&config);
    let dev = args.common.dev;
    if dev {
        switchboard_server::web::apply_dev_config(&mut config);
    }
    let server = Server::start(config.clone()).await?;
    // Handle SIGTERM from the moment the server serves (seeding the dev
    // users below takes a while), so a drain is never skipped.
    let trigger = server.shutdown_trigger();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = trigger.send(true);
    });
    let addr = server.addr();
    println!(
        "switchboard {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    println!("  websocket:  ws://{addr}/connection/websocket");
    println!("  server API: http://{addr}/api/<method>");
    println!("  data dir:   {}", config.node.data_dir.display());
    if dev {
        println!(
            "  dev mode: API key {DEV_API_KEY:?}, token secret {DEV_TOKEN_SECRET:?} (HMAC-SHA256)"
        );
        seed_dev(&server, addr).await;
    }
    tracing::info!(%addr, "listening");
    server.wait().await
}

/// Seeds the demo users and OAuth client of `--dev` mode and says so loudly.
async fn seed_dev(server: &switchboard_server::ServerHandle, addr: std::net::SocketAddr) {
    use switchboard_server::web::{self, DEV_ADMIN, DEV_PASSWORD, DEV_USERS};
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let base = format!("http://{host}");
    match web::seed_dev(server.auth(), &base).await {
        Ok(()) => {
            println!("  demo app:   {base}/   dashboard: {base}/dashboard");
            println!(
                "  DEV ONLY: users {} and {DEV_ADMIN} (dashboard admin), password {DEV_PASSWORD:?}; never use --dev in production",
                DEV_USERS.join(", ")
            );
            if !web::assets_built() {
                println!(
                    "  note: the web assets are not embedded; build them with (cd sdk/js && npm ci && npm run build) && (cd web && npm ci && npm run build), then rebuild"
                );
            }
            tracing::warn!(
                users = %DEV_USERS.join(","),
                admin = DEV_ADMIN,
                "dev mode: seeded demo users with a well-known password and an admin with server API access; development only"
            );
        }
        Err(e) => eprintln!("warning: seeding the dev users and demo client failed: {e:#}"),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn migrate(common: ConfigArgs) -> anyhow::Result<()> {
    let config = load(&common, vec![])?;
    if config.cluster.store != StoreKind::Postgres {
        bail!(
            "cluster.store is not \"postgres\": nothing to migrate (SQLite migrates itself at start)"
        );
    }
    let pg = switchboard_server::pg_config(&config.cluster);
    runtime()?
        .block_on(switchboard_store::PgStore::migrate_with(&pg))
        .context("migrating the PostgreSQL schema (cluster.postgres.url)")?;
    println!("migrations applied");
    Ok(())
}

fn nodes(common: ConfigArgs, json: bool) -> anyhow::Result<()> {
    let config = load(&common, vec![])?;
    if config.cluster.bus != BusKind::Nats {
        bail!("cluster.bus is not \"nats\": a single node has no registry");
    }
    let cl = &config.cluster;
    let id = format!("cli-{}", uuid::Uuid::new_v4().simple());
    let list = runtime()?.block_on(async {
        let bus = switchboard_bus::NatsBus::connect(switchboard_server::nats_config(cl, &id))
            .await
            .context("connecting to NATS (cluster.nats.urls)")?;
        let mut rc = switchboard_bus::RegistryConfig::for_bus(&bus);
        rc.ttl = cl.nats.registry_ttl;
        let registry = switchboard_bus::NodeRegistry::open(&bus, rc)
            .await
            .context("opening the node registry")?;
        let list = registry.list().await.context("listing nodes")?;
        bus.close().await;
        Ok::<_, anyhow::Error>(list)
    })?;
    if json {
        println!("{}", serde_json::to_string(&list)?);
    } else {
        println!(
            "{:<28} {:<28} {:<26} {:>6}",
            "ID", "ADDRESS", "ROLES", "LOAD"
        );
        for n in &list {
            println!(
                "{:<28} {:<28} {:<26} {:>6}",
                n.id,
                n.address,
                n.roles.join(","),
                n.load
            );
        }
    }
    Ok(())
}

fn token_create(args: TokenArgs) -> anyhow::Result<()> {
    let config = load(&args.common, vec![])?;
    let secret = match &config.token.hmac_secret {
        Some(s) => s.clone(),
        None => {
            eprintln!(
                "note: no token.hmac_secret configured; signing with the dev secret {DEV_TOKEN_SECRET:?}"
            );
            DEV_TOKEN_SECRET.to_string()
        }
    };
    if args.user.is_empty() {
        bail!("--user must not be empty");
    }
    let minter = Minter::hs256(secret.as_bytes())?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    let info: Option<serde_json::Value> = match &args.info {
        Some(text) => Some(serde_json::from_str(text).context("--info must be valid JSON")?),
        None => None,
    };
    let token = match &args.channel {
        Some(channel) => {
            if !args.channels.is_empty() {
                bail!(
                    "--channels is for connection tokens; a subscription token (--channel) names one channel"
                );
            }
            minter.mint_subscription(&args.user, channel, args.ttl, info.as_ref(), now)?
        }
        None => {
            let spec = ConnectionTokenSpec {
                user: args.user.clone(),
                ttl: args.ttl,
                channels: args.channels.clone(),
                info,
                ..Default::default()
            };
            minter.mint_connection(&spec, now)?
        }
    };
    if args.json {
        let expires_at = args.ttl.map(|t| now + t.as_secs() as i64);
        let out = serde_json::json!({
            "token": token,
            "user": args.user,
            "channel": args.channel,
            "expires_at": expires_at,
        });
        println!("{out}");
    } else {
        println!("{token}");
    }
    Ok(())
}

fn config_check(common: ConfigArgs, json: bool) -> anyhow::Result<()> {
    let mut config = load(&common, vec![])?;
    if config.token.hmac_secret.is_some() {
        config.token.hmac_secret = Some("<hidden>".into());
    }
    config.api.keys = config
        .api
        .keys
        .iter()
        .map(|_| "<hidden>".to_string())
        .collect();
    if config.api.key.is_some() {
        config.api.key = Some("<hidden>".into());
    }
    if let Some(turn) = config.media.turn.as_mut() {
        turn.secret = "<hidden>".into();
    }
    for hook in &mut config.webhooks {
        hook.secret = "<hidden>".into();
    }
    let nats = &mut config.cluster.nats;
    for secret in [&mut nats.password, &mut nats.token] {
        if secret.is_some() {
            *secret = Some("<hidden>".into());
        }
    }
    config.cluster.postgres.url = hide_url_password(&config.cluster.postgres.url);
    if json {
        println!("{}", serde_json::to_string_pretty(&config)?);
    } else {
        println!("{}", toml::to_string(&config)?);
    }
    Ok(())
}

/// `scheme://user:password@host…` with the password replaced.
fn hide_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:<hidden>@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Calls a server API method of a running server.
fn remote_call(
    remote: &RemoteArgs,
    method: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let config = load(&remote.common, vec![])?;
    let url = remote
        .url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.http.addr));
    let key = remote
        .api_key
        .clone()
        .or_else(|| config.api.all_keys().into_iter().next())
        .context(
            "no API key: pass --api-key, set SWITCHBOARD_CLI_API_KEY, or configure api.keys",
        )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reply: serde_json::Value = rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{}/api/{method}", url.trim_end_matches('/')))
            .header("X-API-Key", key)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("calling {url}: is the server running?"))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            bail!("the server refused the API key");
        }
        Ok::<_, anyhow::Error>(resp.json().await?)
    })?;
    if let Some(err) = reply.get("error") {
        bail!(
            "{method}: {} (code {})",
            err["message"].as_str().unwrap_or("error"),
            err["code"]
        );
    }
    Ok(reply["result"].clone())
}

fn print_result(json: bool, value: &serde_json::Value, human: impl FnOnce(&serde_json::Value)) {
    if json {
        println!("{value}");
    } else {
        human(value);
    }
}

fn apikey(cmd: ApikeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApikeyCommand::Create { remote, name } => {
            let v = remote_call(
                &remote,
                "apikey_create",
                serde_json::json!({ "name": name }),
            )?;
            print_result(remote.json, &v, |v| {
                println!("id:     {}", v["id"].as_str().unwrap_or_default());
                println!("secret: {}", v["secret"].as_str().unwrap_or_default());
                eprintln!("(the secret is shown only now)");
            });
        }
        ApikeyCommand::List { remote } => {
            let v = remote_call(&remote, "apikey_list", serde_json::json!({}))?;
            print_result(remote.json, &v, |v| {
                for k in v["keys"].as_array().into_iter().flatten() {
                    println!(
                        "{}\t{}",
                        k["id"].as_str().unwrap_or_default(),
                        k["name"].as_str().unwrap_or_default()
                    );
                }
            });
        }
        ApikeyCommand::Revoke { remote, id } => {
            let v = remote_call(&remote, "apikey_revoke", serde_json::json!({ "id": id }))?;
            print_result(remote.json, &v, |_| println!("revoked {id}"));
        }
    }
    Ok(())
}

fn user(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create {
            remote,
            username,
            password,
            grants,
        } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("reading the password from stdin")?;
                    line.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            let grants: Option<serde_json::Value> = match grants {
                Some(g) => Some(serde_json::from_str(&g).context("--grants must be valid JSON")?),
                None => None,
            };
            let body =
                serde_json::json!({ "username": username, "password": password, "grants": grants });
            let v = remote_call(&remote, "user_create", body)?;
            print_result(remote.json, &v, |v| {
                println!(
                    "created {} ({})",
                    v["user"]["username"].as_str().unwrap_or_default(),
                    v["user"]["id"].as_str().unwrap_or_default()
                );
            });
        }
        UserCommand::List { remote } => {
            let v = remote_call(&remote, "user_list", serde_json::json!({}))?;
            print_result(remote.json, &v, |v| {
                for u in v["users"].as_array().into_iter().flatten() {
                    let state = if u["disabled"].as_bool() == Some(true) {
                        "disabled"
                    } else {
                        "active"
                    };
                    println!(
                        "{}\t{}\t{state}",
                        u["id"].as_str().unwrap_or_default(),
                        u["username"].as_str().unwrap_or_default()
                    );
                }
            });
        }
        UserCommand::Disable { remote, username } => {
            let v = remote_call(
                &remote,
                "user_disable",
                serde_json::json!({ "username": username }),
            )?;
            print_result(remote.json, &v, |_| println!("disabled {username}"));
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve(args))),
        Command::Token {
            command: TokenCommand::Create(args),
        } => token_create(args),
        Command::Config {
            command: ConfigCommand::Check { common, json },
        } => config_check(common, json),
        Command::Migrate { common } => migrate(common),
        Command::Nodes { common, json } => nodes(common, json),
        Command::Apikey { command } => apikey(command),
        Command::User { command } => user(command),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
