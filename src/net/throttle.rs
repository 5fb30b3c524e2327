//! `upload_rate`: blocks served go out at most this many bytes a second, all peers
//! together. Each answer is given its turn on the line, after the answers before it
//! have had theirs, and waits (holding its serving slot) until then.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces the answers of a node that may send `rate` bytes a second (0: no limit).
pub struct Throttle {
    rate: u64,
    /// When the line is free again.
    free_at: Mutex<Instant>,
}

impl Throttle {
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate,
            free_at: Mutex::new(Instant::now()),
        }
    }

    /// How long an answer of `bytes` made at `now` waits before it goes out.
    pub fn wait(&self, bytes: u64, now: Instant) -> Duration {
        if self.rate == 0 || bytes == 0 {
            return Duration::ZERO;
        }
        let mut free_at = self.free_at.lock().unwrap_or_else(|e| e.into_inner());
        let start = (*free_at).max(now);
        let takes = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        *free_at = start + takes;
        // It goes once the line is free, and is on it for its own time.
        start - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_wait_their_turn_at_the_rate_and_none_without_a_limit() {
        let t = Throttle::new(1 << 20);
        let t0 = Instant::now();
        assert_eq!(t.wait(1 << 20, t0), Duration::ZERO);
        assert_eq!(t.wait(1 << 20, t0), Duration::from_secs(1));
        assert_eq!(t.wait(1 << 19, t0), Duration::from_secs(2));
        // A line idle for a while is free at once.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(t.wait(1 << 20, later), Duration::ZERO);
        assert_eq!(Throttle::new(0).wait(1 << 30, t0), Duration::ZERO);
    }
}
