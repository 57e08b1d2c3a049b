//! Test support shared with the store's tests (one copy of the service
//! starter).
#[path = "../../../store/tests/support/services.rs"]
pub mod services;
