//! `lanspreadd`: the lanspread daemon as a library.
//!
//! [`run`] wires the pieces together: state dir, catalog, the local library,
//! the daemon core and the IPC server. The binary (`main.rs`) only turns
//! flags and signals into a [`Config`] and a shutdown future; the tests call
//! [`run`] directly.

pub mod catalog;
pub mod core;
pub mod discovery;
pub mod download;
pub mod error_chain;
pub mod event_sender;
pub mod faults;
pub mod game_dir;
pub mod generation;
pub mod identity;
pub mod install;
pub mod ipc;
pub mod library;
pub mod manifest_id;
pub mod monitor;
pub mod peer_db;
pub mod ping;
pub mod prepare;
pub mod runtime;
pub mod serve;
pub mod service;
pub mod signature;
pub mod state_dir;
pub mod swarm;
pub mod transport;
pub mod verify;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::core::{Daemon, DaemonParts, Scanner};
use crate::identity::Identity;
use crate::ipc::{AccessPolicy, BindError, IpcServer};
use crate::library::{LibraryIndex, LocalLibrary};
use crate::runtime::PeerRuntimeConfig;
use crate::state_dir::{StateDir, StateDirError};

/// Default file mode of the socket: anyone may connect; what they may do
/// is decided per connection from their credentials.
pub const DEFAULT_SOCKET_MODE: u32 = 0o666;

/// Everything the daemon needs to start, already resolved from flags,
/// environment and defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Game directory from `--game-dir`; falls back to the one remembered
    /// in the state dir.
    pub game_dir: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub socket_mode: u32,
    pub catalog: Catalog,
    /// Name announced to peers and shown in `status`.
    pub name: String,
    /// Group whose members get operator access (`None`: nobody beyond root
    /// and the daemon's user).
    pub operator_group: Option<String>,
    /// QUIC server, TLS identity and discovery backend.
    pub peer_runtime: PeerRuntimeConfig,
    /// Extracts archives for installs.
    pub unpacker: Arc<dyn crate::install::Unpacker>,
    /// Where the local game monitor's changes come from.
    pub change_source: Arc<dyn crate::monitor::ChangeSource>,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    #[error("--game-dir refused")]
    GameDir(#[source] lanspread_proto::ipc::IpcError),
    #[error(transparent)]
    Bind(#[from] BindError),
}

/// The runtime [`run`] is meant for: one thread runs the core, IPC,
/// download planning and pings, and disk work, hashing and scans go to
/// its blocking threads (named `lanspreadd`). The transport's endpoints
/// run on runtimes of their own, one worker each (ARCHITECTURE.md,
/// "Runtimes: one thread each"); a second worker here would only carry
/// wake-ups across threads.
pub fn main_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("lanspreadd")
        .build()
}

/// Runs the daemon until `shutdown` is cancelled. `on_ready` is called once
/// the socket accepts clients (systemd readiness, tests).
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(),
) -> Result<(), StartError> {
    let state_dir = StateDir::open(&config.state_dir)?;
    let peer_id = state_dir.peer_id()?;
    let identity = Arc::new(Identity {
        peer_id,
        name: config.name.clone(),
        daemon_version: env!("CARGO_PKG_VERSION"),
    });
    let scanner = Scanner {
        catalog: Arc::new(config.catalog),
        index: Arc::new(Mutex::new(LibraryIndex::load(state_dir.path()))),
        state_dir,
    };
    let (game_dir, library) = initial_game_dir(config.game_dir, &scanner).await?;

    let server = IpcServer::bind(&config.socket, config.socket_mode).await?;
    let (daemon, core, inbox) = Daemon::new(DaemonParts {
        identity: Arc::clone(&identity),
        scanner,
        game_dir,
        library,
        peer_runtime: config.peer_runtime,
        unpacker: config.unpacker,
        change_source: config.change_source,
    });
    tracing::info!(peer_id = %identity.peer_id, name = %identity.name, "lanspreadd started");
    on_ready();
    let core_task = tokio::spawn(daemon.run(inbox, shutdown.clone().cancelled_owned()));
    server
        .serve(
            core,
            identity,
            AccessPolicy::new(config.operator_group),
            shutdown,
        )
        .await;
    let _ = core_task.await;
    tracing::info!("lanspreadd stopped");
    Ok(())
}

/// The game directory to start with and its first scan: `--game-dir` must
/// be valid (a refusal stops the start), a remembered one that went bad is
/// logged and left unset.
async fn initial_game_dir(
    flag: Option<PathBuf>,
    scanner: &Scanner,
) -> Result<(Option<PathBuf>, LocalLibrary), StartError> {
    let from_flag = flag.is_some();
    let Some(candidate) = flag.or_else(|| scanner.state_dir.saved_game_dir()) else {
        tracing::info!("no game directory yet; waiting for SetGameDir");
        return Ok((None, LocalLibrary::default()));
    };
    let scanner = scanner.clone();
    let adopted = tokio::task::spawn_blocking(move || scanner.adopt(&candidate))
        .await
        .expect("adopting a game directory does not panic");
    match adopted {
        Ok((path, library)) => {
            tracing::info!(game_dir = %path.display(), games = library.games.len(), "game directory in use");
            Ok((Some(path), library))
        }
        Err(err) if from_flag => Err(StartError::GameDir(err)),
        Err(err) => {
            tracing::warn!(cause = %err.message, "remembered game directory is unusable; waiting for SetGameDir");
            Ok((None, LocalLibrary::default()))
        }
    }
}
