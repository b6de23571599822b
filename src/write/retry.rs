//! A bounded retry budget with exponential backoff, for riding through dropped connections,
//! restarts and a server that is loading or busy.

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
}

impl Retry {
    /// A fresh budget (one per incident).
    pub fn new(budget: Duration) -> Self {
        Retry {
            started: Instant::now(),
            budget,
            delay: FIRST_DELAY,
            attempts: 0,
        }
    }

    /// Waits before the next attempt, or gives up with `cause` when the budget would be exceeded.
    pub fn wait(&mut self, cause: &Failure) -> Result<(), Failure> {
        let elapsed = self.started.elapsed();
        if elapsed + self.delay > self.budget {
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
    fn zero_budget_never_waits() {
        let mut r = Retry::new(Duration::ZERO);
        assert!(r.wait(&Failure::transient("x", "y")).is_err());
    }
}
