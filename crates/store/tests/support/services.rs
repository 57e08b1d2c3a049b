//! Makes sure the machine's engines are running for the integration tests:
//! if one does not answer on its port, start it with the same command the
//! machine uses (see `ensure` below), wait for it, and fail loudly if it
//! still does not answer. Tests never skip.
#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

/// NATS with JetStream on 127.0.0.1:4222.
pub const NATS_START: &str = "start-stop-daemon --start --oknodo --background \
    --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js \
    -sd /var/lib/nats-server -l /var/log/nats-server.log";
/// PostgreSQL on 127.0.0.1:5432.
pub const POSTGRES_START: &str =
    "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

/// Ensures NATS answers on 127.0.0.1:4222.
pub fn ensure_nats() {
    ensure("NATS", "127.0.0.1:4222", NATS_START);
}

/// Ensures PostgreSQL answers on 127.0.0.1:5432.
pub fn ensure_postgres() {
    ensure("PostgreSQL", "127.0.0.1:5432", POSTGRES_START);
}

fn answers(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().expect("socket address");
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

fn ensure(name: &str, addr: &str, start: &str) {
    if answers(addr) {
        return;
    }
    eprintln!("{name} is not answering on {addr}; starting it with: {start}");
    let status = Command::new("sh").arg("-c").arg(start).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if answers(addr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "{name} is required on {addr} for these tests and is not running; \
         starting it with `{start}` gave {status:?} and it still does not answer. \
         Start it (see /work/.library/env/machines/rust-svc.md) and re-run."
    );
}
