//! Serving is polite to the machine: the QUIC server (its endpoint, every
//! connection and stream task, the TLS work, and the disk reads and hashing
//! it does for peers) runs on a runtime of its own whose threads have nice
//! [`SERVING_NICE`] and the I/O priority best effort, level 7 (the lowest
//! that is never starved: the idle class could stall serving for as long as
//! the game reads). Downloads, the core and IPC stay on the daemon's main
//! runtime at normal priority.
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

/// Worker threads of the serving runtime: one. s2n-quic processes every
/// connection of an endpoint in its one endpoint task (packets, AES-GCM,
/// acknowledgements), and the disk reads go to blocking threads, so a
/// second worker parallelizes nothing: it only takes stream tasks the
/// endpoint woke over to another thread, each hand-over a futex wake and a
/// task switch. In `just bench single` (same session, four rounds each)
/// one worker cut the seeder's context switches from about 24 000 to
/// 3 000 per GiB and lanspread moved 372 against 294 MiB/s
/// (`docs/lab.md`, issue 16).
const SERVING_WORKERS: usize = 1;

/// Threads for the blocking disk reads and hashing (created on demand,
/// each lowering its priority once).
const SERVING_BLOCKING_THREADS: usize = 8;

/// I/O priority of the serving threads: `ionice` class 2 (best effort) at
/// level 7 (the lowest).
const SERVING_IONICE: [&str; 4] = ["-c", "2", "-n", "7"];

/// How long the runtime's tasks get to close their connections at stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The serving runtime.
#[derive(Debug)]
pub struct ServingRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServingRuntime {
    /// Starts the runtime; every thread it creates lowers its own priority.
    pub fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(SERVING_WORKERS)
            .max_blocking_threads(SERVING_BLOCKING_THREADS)
            .thread_keep_alive(Duration::from_secs(300))
            .thread_name(SERVING_THREAD_NAME)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// The handle to bind and spawn the server on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("the serving runtime runs until stopped")
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

impl Drop for ServingRuntime {
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
