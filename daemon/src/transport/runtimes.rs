//! The transport's own runtimes, one thread each, apart from the daemon's
//! main runtime (core, IPC, download planning):
//!
//! - **Serving** is polite to the machine: the QUIC server (its endpoint,
//!   every connection and stream task, the TLS work, and the disk reads and
//!   hashing it does for peers) runs on threads whose nice is
//!   [`SERVING_NICE`] and whose I/O priority is best effort, level 7 (the
//!   lowest that is never starved: the idle class could stall serving for
//!   as long as the game reads).
//! - **Fetching** carries the QUIC client (its endpoint and the reading of
//!   every chunk's data) at normal priority. A chunk's bytes are hashed
//!   and written where they are read, on the fetch thread
//!   (`docs/download.md#storing-a-chunk`): no hand-off to another thread
//!   per slice, and the pieces never leave the core that decrypted them.
//!   A disk slower than the network slows that thread's reading, which
//!   QUIC's flow control carries back to the seeders; the core and IPC,
//!   on the main runtime, never wait for the disk.
//!
//! The workspace has no `unsafe` outside `install::libarchive` and no
//! maintained crate wraps `ioprio_set`, so each serving thread asks
//! util-linux's `ionice` (Essential on Debian) to set its own I/O priority
//! once, when it starts; without `ionice` the thread keeps the I/O class
//! "none", which the BFQ scheduler maps from the nice value to the same
//! best-effort level 7.

use std::time::Duration;

/// Nice value of the serving threads (19: the lowest CPU priority).
pub const SERVING_NICE: i32 = 19;

/// Name of the serving threads (as `/proc/PID/task/*/comm` shows it).
pub const SERVING_THREAD_NAME: &str = "lanspread-serve";

/// Worker threads of each transport runtime: one. s2n-quic processes every
/// connection of an endpoint in its one endpoint task (packets, AES-GCM,
/// acknowledgements), so a second worker parallelizes nothing: it only takes
/// stream tasks the endpoint woke over to another thread, each hand-over a
/// futex wake and a task switch. In `just bench single` (same session, four
/// rounds each) one worker cut the seeder's context switches from about 24 000
/// to 3 000 per GiB and lanspread moved 372 against 294 MiB/s (`docs/lab.md`,
/// issue 16).
const WORKERS: usize = 1;

/// Blocking threads of each runtime, created on demand: serving reads
/// and hashes peers' chunks on them (each lowering its priority once).
const BLOCKING_THREADS: usize = 8;

/// Name of the fetch thread (as `/proc/PID/task/*/comm` shows it).
const FETCH_THREAD_NAME: &str = "lanspread-fetch";

/// I/O priority of the serving threads: `ionice` class 2 (best effort) at
/// level 7 (the lowest).
const SERVING_IONICE: [&str; 4] = ["-c", "2", "-n", "7"];

/// How long the runtime's tasks get to close their connections at stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A transport runtime: serving or fetching.
#[derive(Debug)]
pub struct TransportRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl TransportRuntime {
    /// Starts the serving runtime; every thread it creates lowers its own
    /// priority.
    pub fn serving() -> std::io::Result<Self> {
        Self::start(
            tokio::runtime::Builder::new_multi_thread()
                .thread_name(SERVING_THREAD_NAME)
                .on_thread_start(lower_priority),
        )
    }

    /// Starts the fetch runtime (normal priority).
    pub fn fetching() -> std::io::Result<Self> {
        Self::start(tokio::runtime::Builder::new_multi_thread().thread_name(FETCH_THREAD_NAME))
    }

    fn start(builder: &mut tokio::runtime::Builder) -> std::io::Result<Self> {
        let runtime = builder
            .worker_threads(WORKERS)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_keep_alive(Duration::from_secs(300))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// The handle to bind endpoints in and spawn on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("a transport runtime runs until stopped")
            .handle()
    }

    /// Stops the runtime, giving its tasks a moment to close connections.
    pub async fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let _ =
                tokio::task::spawn_blocking(move || runtime.shutdown_timeout(SHUTDOWN_GRACE)).await;
        }
    }
}

impl Drop for TransportRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Sets the calling thread's nice value and I/O priority (on Linux both
/// apply to a thread id alone).
fn lower_priority() {
    let thread = rustix::thread::gettid();
    if let Err(err) = rustix::process::setpriority_process(Some(thread), SERVING_NICE) {
        tracing::warn!(cause = %err, "cannot lower a serving thread's CPU priority");
    }
    let ionice = std::process::Command::new("ionice")
        .args(SERVING_IONICE)
        .args(["-p", &thread.as_raw_nonzero().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    match ionice {
        Ok(status) if status.success() => {}
        Ok(status) => {
            tracing::warn!(%status, "ionice could not lower a serving thread's I/O priority")
        }
        Err(err) => {
            tracing::warn!(cause = %err, "cannot run ionice to lower a serving thread's I/O priority")
        }
    }
}
