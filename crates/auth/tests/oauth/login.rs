//! Login: credentials, the unknown-user dummy hash, rate limits per account
//! and per IP.

use std::net::IpAddr;
use std::time::Duration;

use switchboard_auth::oauth::{AuthConfig, LoginError};

use crate::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn unknown_user_and_wrong_password_look_the_same() {
    let mut w = World::new();
    w.user("alice");
    let a = ip("198.51.100.1");

    let before = w.state.password_verifications();
    let (wrong, ev1) = w
        .state
        .login("alice", "wrong password", a, w.now)
        .unwrap_err();
    let after_wrong = w.state.password_verifications();
    let (unknown, ev2) = w
        .state
        .login("nobody", "wrong password", a, w.now)
        .unwrap_err();
    let after_unknown = w.state.password_verifications();

    assert_eq!(wrong, LoginError::InvalidCredentials);
    assert_eq!(unknown, LoginError::InvalidCredentials);
    assert_eq!(wrong.to_string(), unknown.to_string());
    // Exactly one argon2 verification on each path: the unknown user's runs
    // against the dummy hash.
    assert_eq!(after_wrong - before, 1);
    assert_eq!(after_unknown - after_wrong, 1);
    // Both audited as login_failed; the password never appears.
    w.commit(ev1);
    w.commit(ev2);
    let failed = w.audits("login_failed");
    assert_eq!(failed.len(), 2);
    assert!(!w.log.join("").contains("wrong password"));

    let (id, _) = w.state.login("ALICE", PASSWORD, a, w.now).unwrap();
    assert_eq!(id, w.state.user("alice").unwrap().id);
    assert_eq!(w.state.password_verifications() - after_unknown, 1);
}

#[test]
fn rate_limited_per_account() {
    let mut w = World::new();
    w.user("bob");
    // Five failures from five addresses: the account is locked for everyone.
    for i in 0..5 {
        let (e, _) = w
            .state
            .login("bob", "nope-nope", ip(&format!("203.0.113.{i}")), w.now + i)
            .unwrap_err();
        assert_eq!(e, LoginError::InvalidCredentials);
    }
    let checks = w.state.password_verifications();
    let (e, ev) = w
        .state
        .login("bob", PASSWORD, ip("203.0.113.99"), w.now + 10)
        .unwrap_err();
    // The oldest failure (t0) leaves the 300 s window at t0 + 300.
    assert_eq!(
        e,
        LoginError::RateLimited {
            retry_after_secs: 290
        }
    );
    assert!(e.to_string().contains("290"));
    assert_eq!(ev.len(), 1, "the first refusal is audited");
    // No password hashing while limited.
    assert_eq!(w.state.password_verifications(), checks);
    let (_, ev) = w
        .state
        .login("bob", PASSWORD, ip("203.0.113.99"), w.now + 11)
        .unwrap_err();
    assert!(ev.is_empty(), "later refusals are not audited again");
    // Another account is not affected.
    w.user("carol");
    assert!(
        w.state
            .login("carol", PASSWORD, ip("203.0.113.99"), w.now + 12)
            .is_ok()
    );

    // After the window the right password works and resets the account.
    assert!(
        w.state
            .login("bob", PASSWORD, ip("203.0.113.99"), w.now + 300)
            .is_ok()
    );
    assert!(
        w.state
            .login("bob", "nope-nope", ip("203.0.113.99"), w.now + 301)
            .is_err()
    );
    assert!(
        w.state
            .login("bob", PASSWORD, ip("203.0.113.99"), w.now + 302)
            .is_ok()
    );
}

#[test]
fn rate_limited_per_ip() {
    let mut w = World::with_config(AuthConfig {
        login_attempts_per_ip: 20,
        login_window: Duration::from_secs(60),
        ..config()
    });
    w.user("dave");
    let attacker = ip("2001:db8:aa:bb:1::1");
    for i in 0..20 {
        let (e, _) = w
            .state
            .login(&format!("user{i}"), "guess-guess", attacker, w.now)
            .unwrap_err();
        assert_eq!(e, LoginError::InvalidCredentials);
    }
    // Same /64, another interface id: still limited, even with a valid login.
    let neighbour = ip("2001:db8:aa:bb:ffff::2");
    let (e, _) = w
        .state
        .login("dave", PASSWORD, neighbour, w.now + 1)
        .unwrap_err();
    assert_eq!(
        e,
        LoginError::RateLimited {
            retry_after_secs: 59
        }
    );
    // Another network is fine.
    assert!(
        w.state
            .login("dave", PASSWORD, ip("192.0.2.50"), w.now + 1)
            .is_ok()
    );
    // After the window: fine again.
    assert!(
        w.state
            .login("dave", PASSWORD, neighbour, w.now + 60)
            .is_ok()
    );
    w.state.prune(w.now + 1000);
}

#[test]
fn limits_can_be_disabled() {
    let mut w = World::with_config(AuthConfig {
        login_attempts_per_account: 0,
        login_attempts_per_ip: 0,
        ..config()
    });
    w.user("erin");
    let a = ip("192.0.2.1");
    for _ in 0..30 {
        assert_eq!(
            w.state
                .login("erin", "bad-password", a, w.now)
                .unwrap_err()
                .0,
            LoginError::InvalidCredentials
        );
    }
    assert!(w.state.login("erin", PASSWORD, a, w.now).is_ok());
}

#[test]
fn oversized_password_is_refused_without_hashing() {
    let mut w = World::new();
    w.user("frank");
    let before = w.state.password_verifications();
    let (e, _) = w
        .state
        .login("frank", &"x".repeat(100_000), ip("192.0.2.1"), w.now)
        .unwrap_err();
    assert_eq!(e, LoginError::InvalidCredentials);
    assert_eq!(w.state.password_verifications(), before);
}
