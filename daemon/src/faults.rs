//! Test-only fault switches. With the `test-faults` feature they are read
//! from the daemon's environment; without it (every normal build) they are
//! empty functions the compiler removes. Nothing from the network can turn
//! them on.
//!
//! - `LANSPREAD_TEST_CORRUPT_EVERY=N`: every N-th chunk this daemon serves
//!   has one byte flipped (a seeder that sends bad data).
//! - `LANSPREAD_TEST_READ_ERROR_EVERY=N`: every N-th block this daemon reads
//!   to serve fails with EIO (a seeder whose disk fails).
//! - `LANSPREAD_TEST_CRASH_AT=STEP`: the daemon aborts (as a power cut would
//!   stop it) when an install transaction reaches `STEP` (see
//!   `install::transaction`).
//! - `LANSPREAD_TEST_MDNS_HOST=NAME`: the mDNS service points at host
//!   `NAME` (which has no address records), so every peer that browses it
//!   fails to resolve it: a peer that vanishes right after being browsed.

/// Counts calls and says whether this one is the N-th (N from `var`).
#[cfg(feature = "test-faults")]
struct EveryNth {
    var: &'static str,
    every: std::sync::OnceLock<Option<u64>>,
    calls: std::sync::atomic::AtomicU64,
}

#[cfg(feature = "test-faults")]
impl EveryNth {
    const fn new(var: &'static str) -> Self {
        Self {
            var,
            every: std::sync::OnceLock::new(),
            calls: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn hit(&self) -> bool {
        let every = *self.every.get_or_init(|| {
            std::env::var(self.var)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &u64| n > 0)
        });
        let Some(every) = every else { return false };
        let calls = self
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        calls % every == 0
    }
}

/// Whether the chunk being served now must be corrupted.
#[cfg(feature = "test-faults")]
pub fn corrupt_this_chunk() -> bool {
    static SWITCH: EveryNth = EveryNth::new("LANSPREAD_TEST_CORRUPT_EVERY");
    let corrupt = SWITCH.hit();
    if corrupt {
        tracing::warn!("test fault: corrupting a served chunk");
    }
    corrupt
}

/// An EIO if the test asked this served block read to fail.
#[cfg(feature = "test-faults")]
pub fn read_error() -> std::io::Result<()> {
    static SWITCH: EveryNth = EveryNth::new("LANSPREAD_TEST_READ_ERROR_EVERY");
    if SWITCH.hit() {
        tracing::warn!("test fault: failing a disk read");
        return Err(std::io::Error::from_raw_os_error(nix::libc::EIO));
    }
    Ok(())
}

/// Without `test-faults`: nothing.
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn read_error() -> std::io::Result<()> {
    Ok(())
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

/// The host name the mDNS service must point at instead of this host's.
#[cfg(feature = "test-faults")]
pub fn mdns_host() -> Option<String> {
    let host = std::env::var("LANSPREAD_TEST_MDNS_HOST").ok()?;
    tracing::warn!(%host, "test fault: announcing an unresolvable host name");
    Some(host)
}

/// Without `test-faults`: none.
#[cfg(not(feature = "test-faults"))]
#[inline(always)]
pub fn mdns_host() -> Option<String> {
    None
}
