//! Test-only fault switches, compiled in only with the `test-faults`
//! feature and read from the environment of the daemon process. Nothing
//! from the network can turn them on.
//!
//! - `LANSPREAD_TEST_CORRUPT_EVERY=N`: every N-th chunk this daemon serves
//!   has one byte flipped (a seeder that sends bad data).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether the chunk being served now must be corrupted.
pub fn corrupt_this_chunk() -> bool {
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
