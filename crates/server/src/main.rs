//! The `switchboard` command: `serve`, `token create`, `config check`.

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use switchboard_auth::{ConnectionTokenSpec, Minter};
use switchboard_server::Server;
use switchboard_server::config::{Config, DEV_API_KEY, DEV_TOKEN_SECRET, LogFormat, Sources};

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
    let config = load(&args.common, flags)?;
    init_logs(&config);
    let dev = args.common.dev;
    let server = Server::start(config.clone()).await?;
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
    }
    tracing::info!(%addr, "listening");
    let trigger = server.shutdown_trigger();
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = trigger.send(true);
    });
    server.wait().await
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
    if json {
        println!("{}", serde_json::to_string_pretty(&config)?);
    } else {
        println!("{}", toml::to_string(&config)?);
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
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
