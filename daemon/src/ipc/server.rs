//! Binding the socket (without stealing a live daemon's) and accepting
//! connections until shutdown.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, prelude::*};
use interprocess::local_socket::{GenericFilePath, ListenerOptions, ToFsName};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::access::AccessPolicy;
use super::connection::{Connection, ConnectionContext};
use crate::core::CoreHandle;
use crate::identity::Identity;

/// Most clients served at once; more are told so and closed.
pub const MAX_CONNECTIONS: usize = 256;

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("another lanspreadd is already serving {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot remove stale socket {}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create socket directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {}", path.display())]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bound IPC socket.
#[derive(Debug)]
pub struct IpcServer {
    listener: Listener,
    path: PathBuf,
}

impl IpcServer {
    /// Binds `path` with file mode `mode` (applied before the socket is
    /// reachable). A stale socket left by a dead daemon is replaced; a live
    /// daemon's socket is never taken.
    pub async fn bind(path: &Path, mode: u32) -> Result<Self, BindError> {
        clear_stale_socket(path).await?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| BindError::CreateDir {
                path: parent.to_owned(),
                source,
            })?;
        }
        let listen_error = |source| BindError::Listen {
            path: path.to_owned(),
            source,
        };
        let name = path.to_fs_name::<GenericFilePath>().map_err(listen_error)?;
        let options = ListenerOptions::new().name(name);
        #[cfg(unix)]
        let options = {
            use interprocess::os::unix::local_socket::ListenerOptionsExt;
            options.mode(mode as _)
        };
        #[cfg(not(unix))]
        let _ = mode;
        let listener = options.create_tokio().map_err(listen_error)?;
        // The mode set before bind is still masked by the umask (0644 under
        // the usual 022). Masking only removes bits, so widening it to the
        // requested mode now never exposes the socket beyond `mode`.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(listen_error)?;
        }
        Ok(Self {
            listener,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts and serves connections until `shutdown` is cancelled, then
    /// tells every client and removes the socket (by dropping the listener).
    pub async fn serve(
        self,
        core: CoreHandle,
        identity: Arc<Identity>,
        policy: AccessPolicy,
        shutdown: CancellationToken,
    ) {
        let context = Arc::new(ConnectionContext {
            core,
            identity,
            policy,
        });
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut connections = JoinSet::new();
        tracing::info!(socket = %self.path.display(), "ipc listening");
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                // Reap finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok(stream) => {
                        let connection = Connection::new(stream, Arc::clone(&context), shutdown.clone());
                        match Arc::clone(&slots).try_acquire_owned() {
                            Ok(slot) => {
                                connections.spawn(async move {
                                    connection.serve().await;
                                    drop(slot);
                                });
                            }
                            Err(_) => {
                                connections.spawn(connection.refuse("too many clients connected"));
                            }
                        }
                    }
                    Err(err) => {
                        // Accept errors (EMFILE, …) are transient: back off briefly.
                        tracing::warn!(cause = %err, "cannot accept ipc connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("ipc clients did not close in time; dropping them");
            connections.abort_all();
        }
        tracing::info!(socket = %self.path.display(), "ipc stopped, socket removed");
    }
}

/// Removes the socket file at `path` if no daemon answers on it; refuses
/// when one does, or when the path is something other than a socket.
async fn clear_stale_socket(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket {
                path: path.to_owned(),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let name = path
        .to_fs_name::<GenericFilePath>()
        .map_err(|source| BindError::Listen {
            path: path.to_owned(),
            source,
        })?;
    match interprocess::local_socket::tokio::Stream::connect(name).await {
        Ok(_) => Err(BindError::AlreadyRunning {
            path: path.to_owned(),
        }),
        Err(err) => {
            tracing::info!(socket = %path.display(), cause = %err, "removing stale socket");
            std::fs::remove_file(path).map_err(|source| BindError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
    }
}
