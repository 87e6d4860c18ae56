//! Wall-clock time as the cache rows and the metrics record it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 before 1970, `i64::MAX` far in the future).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
