//! The daemon-wide rate limits: one token bucket for everything served to
//! peers and one for everything read from them, shared by every
//! connection, changeable at run time (`SetLimits`).
//!
//! The server takes upload tokens before it hands a block of file data to
//! QUIC; the client takes download tokens after each piece it reads from a
//! chunk stream, so QUIC's flow control slows the sender. A limited peer
//! therefore simply looks slow, and the download planner (which measures
//! each peer's rate) gives it less work.
//!
//! A caller takes what it needs even when the bucket is empty and then
//! sleeps until the debt is paid at the current rate, so concurrent
//! streams share the rate in arrival order and a lowered limit holds for
//! the next piece after the change (a few MiB at most are already
//! promised).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lanspread_proto::model::RateLimits;

/// Time's worth of tokens a bucket may save up: a short idle spell allows a
/// burst of at most this much time at the limit.
const BURST: Duration = Duration::from_millis(100);

/// What one byte of file data costs on the link. A limit is on what the
/// link carries, but the transport hands QUIC whole blocks and never sees
/// datagrams, so each data byte is charged this much: QUIC, UDP, IP and
/// Ethernet framing, acknowledgements and probes. Measured in the lab
/// (`lab_operator`, veth counters against file bytes): 1.10 to 1.14 for a
/// whole 96 MiB transfer at 100 Mbit/s, about 1.18 at 40 Mbit/s (pings,
/// acknowledgements and probes weigh more at low rates).
pub const LINK_BYTES_PER_DATA_BYTE: f64 = 1.18;

/// The upload and download buckets. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct RateLimiters {
    pub upload: Arc<RateLimiter>,
    pub download: Arc<RateLimiter>,
}

impl RateLimiters {
    /// Buckets starting at `limits`.
    pub fn new(limits: RateLimits) -> Self {
        let limiters = Self::default();
        limiters.set(limits);
        limiters
    }

    /// The limits in effect.
    pub fn limits(&self) -> RateLimits {
        RateLimits {
            upload: self.upload.rate(),
            download: self.download.rate(),
        }
    }

    /// Changes both limits (0: none).
    pub fn set(&self, limits: RateLimits) {
        self.upload.set_rate(limits.upload);
        self.download.set_rate(limits.download);
    }
}

/// One token bucket, in bytes per second (0: unlimited).
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// Bytes per second; read without the lock on the unlimited fast path.
    rate: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Saved-up bytes; negative while callers wait for their debt.
    tokens: f64,
    /// When `tokens` was last brought up to date (`None`: never).
    updated: Option<Instant>,
}

impl RateLimiter {
    /// Bytes per second (0: unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Changes the rate. Savings above the new burst are dropped; a debt
    /// stays and is paid at the new rate.
    pub fn set_rate(&self, rate: u64) {
        // The lock is never held across an await (only here and in `take`).
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        Self::refill(&mut bucket, self.rate(), now);
        bucket.tokens = bucket.tokens.min(burst(rate));
        if self.rate() == 0 {
            // Unlimited until now: start with an empty bucket.
            bucket.tokens = 0.0;
        }
        bucket.updated = Some(now);
        self.rate.store(rate, Ordering::Relaxed);
    }

    /// Takes the tokens for `bytes` of file data (charged with their
    /// framing, [`LINK_BYTES_PER_DATA_BYTE`]) and waits until the rate
    /// allows them. Returns at once while unlimited.
    pub async fn acquire(&self, bytes: usize) {
        if let Some(wait) = self.take(bytes as f64 * LINK_BYTES_PER_DATA_BYTE, Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `bytes` tokens at `now`; how long the caller must wait.
    fn take(&self, bytes: f64, now: Instant) -> Option<Duration> {
        let rate = self.rate();
        if rate == 0 {
            return None;
        }
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        Self::refill(&mut bucket, rate, now);
        bucket.tokens -= bytes;
        (bucket.tokens < 0.0).then(|| Duration::from_secs_f64(-bucket.tokens / rate as f64))
    }

    fn refill(bucket: &mut Bucket, rate: u64, now: Instant) {
        if let Some(updated) = bucket.updated {
            let earned = now.saturating_duration_since(updated).as_secs_f64() * rate as f64;
            bucket.tokens = (bucket.tokens + earned).min(burst(rate));
        }
        bucket.updated = Some(now);
    }
}

fn burst(rate: u64) -> f64 {
    rate as f64 * BURST.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_bucket_never_waits() {
        let limiter = RateLimiter::default();
        assert_eq!(limiter.take(1e12, Instant::now()), None);
    }

    #[test]
    fn waits_add_up_to_the_rate_across_callers() {
        let limiter = RateLimiter::default();
        limiter.set_rate(1_000_000);
        let now = Instant::now();
        // Four callers of 1 MB each at the same moment: the last one waits
        // until 4 MB have passed at 1 MB/s.
        let waits: Vec<_> = (0..4).map(|_| limiter.take(1e6, now).unwrap()).collect();
        let secs: Vec<f64> = waits.iter().map(Duration::as_secs_f64).collect();
        // set_rate stamped the bucket a moment before `now`, which earned
        // a few tokens: the first wait is a hair under 1 s; each next one
        // exactly 1 s longer.
        assert!((0.99..=1.0).contains(&secs[0]), "{secs:?}");
        for pair in secs.windows(2) {
            assert!((pair[1] - pair[0] - 1.0).abs() < 1e-6, "{secs:?}");
        }
    }

    #[test]
    fn idle_time_saves_at_most_the_burst() {
        let limiter = RateLimiter::default();
        limiter.set_rate(1_000_000);
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        // 10 s idle saved only 100 ms worth: 100 kB pass, 200 kB wait 0.1 s.
        assert_eq!(limiter.take(100_000.0, later), None);
        let wait = limiter.take(100_000.0, later).unwrap();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn a_lowered_rate_applies_to_the_debt_and_what_follows() {
        let limiter = RateLimiter::default();
        limiter.set_rate(10_000_000);
        let now = Instant::now();
        limiter.take(1e6, now);
        limiter.set_rate(1_000_000);
        // The 1 MB debt and 1 MB more, at 1 MB/s (set_rate stamped its own
        // clock a moment after `now`, so allow that).
        let wait = limiter.take(1e6, now).unwrap().as_secs_f64();
        assert!((1.9..=2.0 + 1e-6).contains(&wait), "{wait}");
        limiter.set_rate(0);
        assert_eq!(limiter.take(1e9, Instant::now()), None);
    }
}
