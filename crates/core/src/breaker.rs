//! A circuit breaker for calls to a dependency that can go away (the
//! PostgreSQL store): after repeated failures, calls fail fast instead of
//! each waiting for a timeout, and one probe at a time tests for recovery.
//!
//! * **Closed**: calls go through. `failure_threshold` consecutive failures
//!   open it; so does a single failure that took at least `slow_failure`
//!   (the call waited for a timeout: the dependency is unreachable, and
//!   letting more callers wait the same time helps nobody).
//! * **Open**: [`Breaker::allow`] refuses calls until `cool_down` has passed.
//! * **Half-open**: one probe call goes through; its success closes the
//!   breaker, its failure opens it for another `cool_down`. A probe that never
//!   reports (its caller was cancelled) is replaced after `cool_down`.
//!
//! Time is passed in as milliseconds (any monotonic-enough clock).
//!
//! ```
//! use switchboard_core::breaker::{Breaker, BreakerConfig};
//! let mut b = Breaker::new(BreakerConfig { failure_threshold: 2, slow_failure_ms: 1_000, cool_down_ms: 500 });
//! assert!(b.allow(0).is_ok());
//! b.on_failure(0, 10);
//! b.on_failure(10, 10);
//! assert!(b.is_open());
//! assert!(b.allow(100).is_err());
//! assert!(b.allow(600).is_ok()); // the probe
//! b.on_success(610);
//! assert!(!b.is_open());
//! ```

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// A failure whose call took at least this long opens the breaker at once.
    pub slow_failure_ms: u64,
    /// How long the breaker stays open before letting a probe through.
    pub cool_down_ms: u64,
}

impl Default for BreakerConfig {
    /// 3 consecutive failures, or one failure after 2 s; 2 s cool-down.
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            slow_failure_ms: 2_000,
            cool_down_ms: 2_000,
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Calls go through; `failures` consecutive failures so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Calls fail fast until `until_ms`.
    Open {
        /// When a probe may go through.
        until_ms: i64,
    },
    /// A probe started at `probe_ms` is in flight; other calls fail fast.
    HalfOpen {
        /// When the probe was let through.
        probe_ms: i64,
    },
}

/// Returned by [`Breaker::allow`] when a call must fail fast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// Milliseconds until a probe may be let through (0: a probe is in flight).
    pub retry_in_ms: u64,
}

/// A circuit breaker (see the module documentation).
#[derive(Clone, Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed { failures: 0 },
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Whether calls are being refused (open or half-open).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// Whether a call may go through at `now_ms`. In the open state after the
    /// cool-down this lets one probe through (and moves to half-open).
    pub fn allow(&mut self, now_ms: i64) -> Result<(), Rejected> {
        let cool = self.config.cool_down_ms as i64;
        match self.state {
            State::Closed { .. } => Ok(()),
            State::Open { until_ms } if now_ms < until_ms => Err(Rejected {
                retry_in_ms: (until_ms - now_ms) as u64,
            }),
            State::HalfOpen { probe_ms } if now_ms < probe_ms.saturating_add(cool) => {
                Err(Rejected { retry_in_ms: 0 })
            }
            // Cool-down over, or the last probe never reported: probe again.
            State::Open { .. } | State::HalfOpen { .. } => {
                self.state = State::HalfOpen { probe_ms: now_ms };
                Ok(())
            }
        }
    }

    /// Reports a call that succeeded: the breaker closes.
    pub fn on_success(&mut self, _now_ms: i64) {
        self.state = State::Closed { failures: 0 };
    }

    /// Reports a call that failed after `took_ms`.
    pub fn on_failure(&mut self, now_ms: i64, took_ms: u64) {
        let open = State::Open {
            until_ms: now_ms.saturating_add(self.config.cool_down_ms as i64),
        };
        self.state = match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold.max(1)
                    || took_ms >= self.config.slow_failure_ms
                {
                    open
                } else {
                    State::Closed { failures }
                }
            }
            // A probe (or a call let through before the breaker opened) failed.
            State::HalfOpen { .. } => open,
            State::Open { until_ms } => State::Open { until_ms },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            slow_failure_ms: 1_000,
            cool_down_ms: 500,
        })
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let mut b = breaker();
        b.on_failure(0, 5);
        b.on_failure(1, 5);
        b.on_success(2);
        b.on_failure(3, 5);
        b.on_failure(4, 5);
        assert_eq!(b.state(), State::Closed { failures: 2 });
        assert!(b.allow(5).is_ok());
        b.on_failure(5, 5);
        assert_eq!(b.state(), State::Open { until_ms: 505 });
    }

    #[test]
    fn one_slow_failure_opens() {
        let mut b = breaker();
        b.on_failure(3_000, 1_000);
        assert!(b.is_open());
        assert_eq!(b.allow(3_100), Err(Rejected { retry_in_ms: 400 }));
    }

    #[test]
    fn open_fails_fast_then_lets_one_probe_through() {
        let mut b = breaker();
        for t in 0..3 {
            b.on_failure(t, 1);
        }
        assert!(b.allow(100).is_err());
        assert!(b.allow(501).is_err());
        assert!(b.allow(502).is_ok(), "probe after the cool-down");
        assert_eq!(b.state(), State::HalfOpen { probe_ms: 502 });
        assert_eq!(b.allow(503), Err(Rejected { retry_in_ms: 0 }));
        b.on_success(510);
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(b.allow(511).is_ok());
    }

    #[test]
    fn failed_probe_reopens_for_another_cool_down() {
        let mut b = breaker();
        b.on_failure(0, 1_000);
        assert!(b.allow(500).is_ok());
        b.on_failure(520, 20);
        assert_eq!(b.state(), State::Open { until_ms: 1_020 });
        assert!(b.allow(1_000).is_err());
        assert!(b.allow(1_020).is_ok());
    }

    #[test]
    fn a_lost_probe_is_replaced_after_the_cool_down() {
        let mut b = breaker();
        b.on_failure(0, 1_000);
        assert!(b.allow(500).is_ok());
        // The probe's caller went away without reporting.
        assert!(b.allow(900).is_err());
        assert!(b.allow(1_000).is_ok());
        assert_eq!(b.state(), State::HalfOpen { probe_ms: 1_000 });
    }

    #[test]
    fn late_failures_do_not_extend_an_open_breaker() {
        let mut b = breaker();
        b.on_failure(0, 1_000);
        b.on_failure(400, 1_000);
        assert_eq!(b.state(), State::Open { until_ms: 500 });
    }
}
