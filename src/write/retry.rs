//! A bounded retry budget with exponential backoff, for riding through dropped connections,
//! restarts and a server that is loading or busy.
//!
//! An attempt is not started when it would likely end after the budget: the last attempt's length
//! is the estimate, so a server that accepts connections and never answers is waited for once (one
//! reply timeout), not once more past the budget.

use std::time::{Duration, Instant};

use crate::error::Failure;

const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// The time one incident may take to recover, and the next wait.
pub struct Retry {
    started: Instant,
    budget: Duration,
    delay: Duration,
    attempts: u32,
    /// When the attempt that just failed began (the end of the last wait).
    attempt_began: Instant,
}

impl Retry {
    /// A fresh budget (one per incident).
    pub fn new(budget: Duration) -> Self {
        Retry {
            started: Instant::now(),
            budget,
            delay: FIRST_DELAY,
            attempts: 0,
            attempt_began: Instant::now(),
        }
    }

    /// Waits before the next attempt, or gives up with `cause` when the next attempt (as long as
    /// the last one) would end after the budget.
    pub fn wait(&mut self, cause: &Failure) -> Result<(), Failure> {
        let elapsed = self.started.elapsed();
        let attempt = self.attempt_began.elapsed();
        if elapsed + self.delay + attempt > self.budget {
            return Err(Failure {
                message: format!(
                    "{} Gave up after {} retries in {:.1} s (raise \"retry_budget_ms\" to wait longer).",
                    cause.message.trim_end_matches('.').to_string() + ".",
                    self.attempts,
                    elapsed.as_secs_f64()
                ),
                ..cause.clone()
            });
        }
        std::thread::sleep(self.delay);
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.attempts += 1;
        self.attempt_began = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_up_when_the_budget_is_spent() {
        let cause = Failure::transient("Redis went away.", "reset");
        let mut r = Retry::new(Duration::from_millis(200));
        let mut waits = 0;
        let err = loop {
            match r.wait(&cause) {
                Ok(()) => waits += 1,
                Err(e) => break e,
            }
            assert!(waits < 20, "the loop must end");
        };
        assert!(waits >= 1);
        assert!(
            err.message.starts_with("Redis went away. Gave up after"),
            "{}",
            err.message
        );
        assert_eq!(err.failure_type, crate::error::FailureType::Transient);
        assert!(r.started.elapsed() <= Duration::from_millis(400));
    }

    #[test]
    fn an_attempt_that_would_end_after_the_budget_is_not_started() {
        let cause = Failure::transient("Redis did not answer in time.", "timed out");
        let mut r = Retry::new(Duration::from_millis(500));
        // The first attempt waited 300 ms (a reply timeout): another would end at 600 ms.
        std::thread::sleep(Duration::from_millis(300));
        let err = r.wait(&cause).expect_err("no second wait");
        assert!(
            err.message.contains("Gave up after 0 retries"),
            "{}",
            err.message
        );
        // Quick failures are retried within the same budget.
        let mut r = Retry::new(Duration::from_millis(500));
        assert!(r.wait(&cause).is_ok());
        assert!(r.wait(&cause).is_ok());
    }

    #[test]
    fn zero_budget_never_waits() {
        let mut r = Retry::new(Duration::ZERO);
        assert!(r.wait(&Failure::transient("x", "y")).is_err());
    }
}
