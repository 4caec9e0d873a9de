//! Test-only fault switches. With the `test-faults` feature they are read
//! from the daemon's environment; without it (every normal build) they are
//! empty functions the compiler removes. Nothing from the network can turn
//! them on.
//!
//! - `LANSPREAD_TEST_CORRUPT_EVERY=N`: every N-th chunk this daemon serves
//!   has one byte flipped (a seeder that sends bad data).
//! - `LANSPREAD_TEST_CRASH_AT=STEP`: the daemon aborts (as a power cut would
//!   stop it) when an install transaction reaches `STEP` (see
//!   `install::transaction`).

/// Whether the chunk being served now must be corrupted.
#[cfg(feature = "test-faults")]
pub fn corrupt_this_chunk() -> bool {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static EVERY: OnceLock<Option<u64>> = OnceLock::new();
    static SERVED: AtomicU64 = AtomicU64::new(0);
    let every = *EVERY.get_or_init(|| {
        std::env::var("LANSPREAD_TEST_CORRUPT_EVERY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&n: &u64| n > 0)
    });
    match every {
        Some(every) => {
            let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
            let corrupt = served % every == 0;
            if corrupt {
                tracing::warn!(served, "test fault: corrupting a served chunk");
            }
            corrupt
        }
        None => false,
    }
}

/// Aborts the process if the test asked to crash at `step`.
#[cfg(feature = "test-faults")]
pub fn crash_point(step: &str) {
    if std::env::var("LANSPREAD_TEST_CRASH_AT").is_ok_and(|s| s == step) {
        eprintln!("test fault: crashing at {step}");
        std::process::abort();
    }
}

/// Without `test-faults`: nothing.
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn crash_point(_step: &str) {}
