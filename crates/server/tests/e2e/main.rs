//! End-to-end tests: real servers on loopback, real WebSocket clients.
//!
//! One test binary for the whole crate (link time); one module per area.

mod auth;
mod calllog;
mod calls;
mod cluster;
mod common;
mod faults;
mod limits;
mod messaging;
mod operations;
mod ringing;
mod rooms;
mod rtc;
mod server_api;
mod transports;
