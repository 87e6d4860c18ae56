//! Waits between attempts to reach the control plane: exponential with
//! full jitter (a random wait up to the step's ceiling), so a thousand
//! agents cut off by one replica's exit do not come back in one wave.

use std::time::Duration;

use rand::Rng;

/// The ceiling of the first wait after a stream that had worked.
const FIRST: Duration = Duration::from_millis(100);

/// The attempts of one outage.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    max: Duration,
}

impl Backoff {
    /// Waits grow from 100 ms up to `max`.
    pub fn new(max: Duration) -> Self {
        Self { attempt: 0, max: max.max(FIRST) }
    }

    /// The next wait: random in [0, min(max, 100 ms × 2^attempt)].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = FIRST.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=millis))
    }

    /// A stream worked: the next outage starts from the first step.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_ceiling_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(5));
        let ceilings = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        for ceiling in ceilings {
            let wait = backoff.next_delay();
            assert!(wait <= Duration::from_millis(ceiling), "{wait:?} over {ceiling} ms");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= FIRST);
    }

    #[test]
    fn a_long_outage_does_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(30));
        for _ in 0..200 {
            assert!(backoff.next_delay() <= Duration::from_secs(30));
        }
    }
}
