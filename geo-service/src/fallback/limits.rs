//! A token bucket and a circuit breaker, on tokio's clock so tests can
//! pause time.

use std::time::Duration;

use tokio::time::Instant;

/// Allows `capacity` requests a minute, refilled continuously.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `per_minute` tokens.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute);
        Self { capacity, tokens: capacity, per_second: capacity / 60.0, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }
}

/// Opens after repeated failures or when told to (HTTP 429, `X-Rl: 0`).
#[derive(Debug, Clone, Default)]
pub struct Breaker {
    open_until: Option<Instant>,
    consecutive_failures: u32,
}

impl Breaker {
    /// How much longer it stays open; zero when closed.
    pub fn open_for(&self, now: Instant) -> Duration {
        self.open_until.map_or(Duration::ZERO, |until| until.saturating_duration_since(now))
    }

    pub fn open(&mut self, now: Instant, duration: Duration) {
        // Saturates rather than panics on a huge duration (callers cap it too).
        let until = now.checked_add(duration).unwrap_or(now + Duration::from_secs(86_400 * 365));
        self.open_until = Some(self.open_until.map_or(until, |current| current.max(until)));
    }

    pub fn failure(&mut self, now: Instant, threshold: u32, duration: Duration) {
        self.consecutive_failures += 1;
        if self.consecutive_failures >= threshold {
            self.consecutive_failures = 0;
            self.open(now, duration);
        }
    }

    pub fn success(&mut self) {
        self.consecutive_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_its_rate_and_refills() {
        let start = Instant::now();
        let mut bucket = TokenBucket::per_minute(15, start);
        assert_eq!((0..20).filter(|_| bucket.try_take(start)).count(), 15, "a full minute's worth, no more");
        assert!(!bucket.try_take(start + Duration::from_secs(3)), "one token takes 4 s to come back");
        assert!(bucket.try_take(start + Duration::from_secs(4)));
        assert!(bucket.available(start + Duration::from_secs(600)) <= 15.0, "never more than the capacity");
    }

    #[test]
    fn the_breaker_opens_on_demand_and_after_failures() {
        let now = Instant::now();
        let mut breaker = Breaker::default();
        breaker.open(now, Duration::from_secs(10));
        assert_eq!(breaker.open_for(now + Duration::from_secs(4)), Duration::from_secs(6));
        assert_eq!(breaker.open_for(now + Duration::from_secs(11)), Duration::ZERO);

        let mut breaker = Breaker::default();
        for _ in 0..4 {
            breaker.failure(now, 5, Duration::from_secs(30));
        }
        breaker.success();
        breaker.failure(now, 5, Duration::from_secs(30));
        assert_eq!(breaker.open_for(now), Duration::ZERO, "a success resets the count");
        for _ in 0..4 {
            breaker.failure(now, 5, Duration::from_secs(30));
        }
        assert_eq!(breaker.open_for(now), Duration::from_secs(30));
    }
}
