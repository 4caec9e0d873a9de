//! The peer runtime: the QUIC server, discovery and the ping task, started
//! together once the daemon has a game directory
//! (`docs/design.md#the-daemons-parts`) and stopped together at shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::discovery::{Announcement, DiscoveryBackend, DiscoveryEvent};
use crate::event_sender::EventSender;
use crate::identity::Identity;
use crate::library::LibraryIndex;
use crate::ping::{self, PingEvent, PingTarget};
use crate::prepare::{Manifests, PrepareEvent, Preparer};
use crate::serve::ServedLibrary;
use crate::transport::{
    PeerClient, QuicServer, RateLimiters, ServeContext, TlsIdentity, TransportError,
    TransportRuntime,
};

/// How the peer runtime is set up.
#[derive(Clone, Debug)]
pub struct PeerRuntimeConfig {
    /// QUIC listen address (port 0: chosen by the OS, announced by mDNS).
    pub listen: SocketAddr,
    pub tls: TlsIdentity,
    pub discovery: Arc<dyn DiscoveryBackend>,
    /// The daemon's upload and download limits (shared with the core,
    /// which changes them for `SetLimits`).
    pub limits: RateLimiters,
}

/// The channels the runtime reads the core's state from.
#[derive(Debug)]
pub struct RuntimeFeeds {
    pub served: watch::Receiver<Arc<ServedLibrary>>,
    pub targets: watch::Receiver<Vec<PingTarget>>,
    pub index: Arc<Mutex<LibraryIndex>>,
    /// Where the index is saved.
    pub state_dir: std::path::PathBuf,
    /// Where discovery reports.
    pub discovery: EventSender<DiscoveryEvent>,
    /// Where pings report.
    pub pings: EventSender<PingEvent>,
    /// Where the manifest preparer reports.
    pub prepare: EventSender<PrepareEvent>,
    /// What the downloads hold, for the server.
    pub swarm: Arc<crate::swarm::Swarm>,
    /// Where the QUIC server reports.
    pub serve: EventSender<crate::transport::ServeEvent>,
}

/// The running peer runtime.
#[derive(Debug)]
pub struct PeerRuntime {
    /// Where the QUIC server listens.
    pub listen: SocketAddr,
    client: Arc<PeerClient>,
    /// The file lists of the games served here, as the preparer made them.
    manifests: Arc<Manifests>,
    stop_discovery: Arc<AtomicBool>,
    discovery_thread: Option<std::thread::JoinHandle<()>>,
    /// Cancels the server and ping tasks.
    tasks: CancellationToken,
    /// The QUIC server's own low-priority runtime.
    serving: Option<TransportRuntime>,
    /// The QUIC client's runtime, where chunk data is read and stored.
    fetching: Option<TransportRuntime>,
}

impl PeerRuntime {
    /// Binds the QUIC server and starts the server, ping and discovery.
    pub fn start(
        config: &PeerRuntimeConfig,
        identity: &Identity,
        feeds: RuntimeFeeds,
    ) -> Result<Self, TransportError> {
        let start = |runtime: std::io::Result<TransportRuntime>, what: &str| {
            runtime.map_err(|err| TransportError::Start {
                addr: config.listen.to_string(),
                reason: format!("cannot start the {what} threads: {err}"),
            })
        };
        let serving = start(TransportRuntime::serving(), "serving")?;
        let fetching = start(TransportRuntime::fetching(), "fetch")?;
        // An endpoint's tasks start on the runtime it is bound in.
        let server = {
            let _serving = serving.handle().enter();
            QuicServer::bind(config.listen, &config.tls)?
        };
        let client = {
            let _fetching = fetching.handle().enter();
            Arc::new(
                PeerClient::new(&config.tls)?
                    .with_download_limit(Arc::clone(&config.limits.download))
                    .with_peer_id(&identity.peer_id),
            )
        };
        let listen = server.local_addr();
        let tasks = CancellationToken::new();
        let manifests = Arc::new(Manifests::default());
        let preparer = Preparer {
            served: feeds.served.clone(),
            index: feeds.index,
            state_dir: feeds.state_dir,
            manifests: Arc::clone(&manifests),
            events: feeds.prepare,
        };
        tokio::spawn(preparer.run(tasks.clone()));
        let heard = Arc::new(ping::Heard::default());
        let context = Arc::new(ServeContext {
            peer_id: identity.peer_id.clone(),
            library: feeds.served,
            manifests: Arc::clone(&manifests),
            upload_limit: Arc::clone(&config.limits.upload),
            swarm: feeds.swarm,
            events: feeds.serve,
            uploads: Default::default(),
            turns: Default::default(),
            heard: Arc::clone(&heard),
        });
        let pinging = ping::Pinging {
            client: Arc::clone(&client),
            peer_id: identity.peer_id.clone(),
            own: context.revision_feed(),
            heard,
        };
        serving.handle().spawn(server.serve(context, tasks.clone()));
        tokio::spawn(ping::run(
            pinging,
            feeds.targets,
            feeds.pings,
            tasks.clone(),
        ));
        let stop_discovery = Arc::new(AtomicBool::new(false));
        let discovery = feeds.discovery;
        let announcement = Announcement {
            peer_id: identity.peer_id.clone(),
            name: identity.name.clone(),
            listen,
        };
        let discovery_thread = config
            .discovery
            .start(
                announcement,
                Box::new(move |event| {
                    // The core is gone only at shutdown; then nobody listens.
                    let _ = discovery.blocking_send(event);
                }),
                Arc::clone(&stop_discovery),
            )
            .map_err(|err| TransportError::Start {
                addr: listen.to_string(),
                reason: format!("cannot start the discovery thread: {err}"),
            })?;
        Ok(Self {
            listen,
            client,
            manifests,
            stop_discovery,
            discovery_thread: Some(discovery_thread),
            tasks,
            serving: Some(serving),
            fetching: Some(fetching),
        })
    }

    /// The client side of the transport, shared with downloads.
    pub fn client(&self) -> Arc<PeerClient> {
        Arc::clone(&self.client)
    }

    /// The file lists of the games served here (a download reuses the
    /// chunk hashes of the version it replaces).
    pub fn manifests(&self) -> Arc<Manifests> {
        Arc::clone(&self.manifests)
    }

    /// Stops discovery, the server and pings, and closes peer connections.
    pub async fn stop(mut self) {
        self.stop_discovery.store(true, Ordering::Relaxed);
        self.tasks.cancel();
        self.client.close_all().await;
        if let Some(serving) = self.serving.take() {
            serving.stop().await;
        }
        if let Some(fetching) = self.fetching.take() {
            fetching.stop().await;
        }
        if let Some(thread) = self.discovery_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}
