//! The core's part of the download pipeline (`docs/download.md`):
//! gathering file lists, starting, cancelling and concluding downloads.
//! The transfer itself runs in `crate::download`.

use lanspread_proto::ipc::{
    CancelRequested, CommandResult, DownloadStarted, ErrorCode, GameFilesPage, GameFilesResult,
    IpcError, PAGE_BYTES, PeerEvent,
};
use lanspread_proto::model::{GameFile, GameId, Version};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::{CommandOutcome, Daemon, DaemonEvent, Operation};
use crate::download::gather::{Candidate, GatherError, GatherEvent, GatheredManifest, gather};
use crate::download::{self, DownloadEvent, DownloadRequest, Source, SwarmLink, bytes_by_kind};
use crate::error_chain::err_chain;
use crate::event_sender::EventSender;
use crate::library::SENTINEL;
use crate::peer_db::PeerState;
use crate::swarm::Partial;

/// A download checked against the file list, not started yet.
#[derive(Debug)]
pub struct PreparedDownload {
    pub request: DownloadRequest,
    pub client: std::sync::Arc<crate::transport::PeerClient>,
    pub started: DownloadStarted,
    /// What it will serve to the swarm (made off the core, with the space
    /// check: naming the manifest hashes all of it).
    pub partial: Option<std::sync::Arc<Partial>>,
}

/// Where the core sends a running download the peers that start holding
/// its manifest.
#[derive(Debug)]
pub struct SourceFeed {
    /// The manifest's digest, as peers announce it.
    manifest: String,
    sources: tokio::sync::mpsc::Sender<Source>,
}

impl SourceFeed {
    /// Offers `peer` to the download (it ignores peers it already has).
    fn offer(&self, peer: &crate::peer_db::PeerEntry, complete: bool, tentative: bool) {
        let _ = self.sources.try_send(Source {
            peer_id: peer.info.peer_id.clone(),
            addr: peer.dial_addr(),
            complete,
            tentative,
        });
    }
}

/// The outcome of asking peers for a file list.
#[derive(Debug)]
pub struct ManifestGathered {
    id: GameId,
    result: Result<GatheredManifest, GatherError>,
    reply: oneshot::Sender<CommandOutcome>,
}

impl Daemon {
    /// `GetGame` / `FetchLatestFromPeers`: asks the connected peers that
    /// hold the latest version for its file list; answers when they did.
    pub(super) fn on_get_game(&mut self, id: GameId, reply: oneshot::Sender<CommandOutcome>) {
        let refuse = |reply: oneshot::Sender<CommandOutcome>, err: IpcError| {
            let _ = reply.send(CommandOutcome::Reply(Err(err)));
        };
        let client = match self.peer_client() {
            Ok(client) => client,
            Err(err) => return refuse(reply, err),
        };
        let latest: Option<Version> = self
            .peers
            .connected()
            .flat_map(|p| p.games.iter().filter(|g| g.id == id))
            .map(|g| g.version.clone())
            .max();
        let Some(version) = latest else {
            self.publish(PeerEvent::NoPeersHaveGame { id: id.clone() });
            return refuse(
                reply,
                IpcError::new(ErrorCode::NoPeers, format!("no connected peer holds {id}")),
            );
        };
        let candidates = self.holders_of(&id, &version);
        let inbox = self.inbox.clone();
        let events = EventSender::<GatherEvent>::new(self.inbox.clone());
        tokio::spawn(async move {
            let result = gather(&client, &id, &version, candidates, &events).await;
            let gathered = ManifestGathered { id, result, reply };
            let _ = inbox.send(DaemonEvent::ManifestGathered(gathered)).await;
        });
    }

    pub(super) fn on_manifest_gathered(&mut self, gathered: ManifestGathered) {
        let ManifestGathered { id, result, reply } = gathered;
        let outcome = match result {
            Err(err) => {
                self.publish(PeerEvent::NoPeersHaveGame { id: id.clone() });
                Err(IpcError::new(ErrorCode::NoPeers, err_chain(&err)))
            }
            Ok(manifest) => {
                let result = GameFilesResult {
                    id: id.clone(),
                    version: manifest.version.clone(),
                    files: manifest.files.len() as u32,
                    bytes: manifest.files.iter().map(|f| f.size).sum(),
                    peers: manifest.holders.len() as u32,
                };
                self.publish(PeerEvent::GotGameFiles {
                    id: id.clone(),
                    version: result.version.clone(),
                    files: result.files,
                    bytes: result.bytes,
                    peers: result.peers,
                });
                self.manifests.insert(id, manifest);
                Ok(CommandResult::GameFiles(result))
            }
        };
        let _ = reply.send(CommandOutcome::Reply(outcome));
    }

    /// The connected peers that announce `id` at `version`, complete or
    /// downloading it: whom to ask for its file list (a download and a
    /// verify ask the same peers).
    pub(super) fn holders_of(&self, id: &GameId, version: &Version) -> Vec<Candidate> {
        self.peers
            .connected()
            .filter_map(|p| {
                let game = p
                    .games
                    .iter()
                    .find(|g| &g.id == id && &g.version == version)?;
                Some(Candidate {
                    peer_id: p.info.peer_id.clone(),
                    name: p.info.name.clone(),
                    addr: p.dial_addr(),
                    complete: game.complete,
                })
            })
            .collect()
    }

    /// A peer subscribed to a manifest we are downloading: it downloads it
    /// too, so our download takes it as a source now rather than after
    /// its next announcement reaches us.
    pub(super) fn on_serve_event(&mut self, event: crate::transport::ServeEvent) {
        let (id, manifest, peer_id) = match event {
            crate::transport::ServeEvent::Follower {
                id,
                manifest,
                peer_id,
            } => (id, manifest, peer_id),
            crate::transport::ServeEvent::Uploads { totals } => {
                return self.on_uploads(totals);
            }
        };
        let Some(Operation::Download(_, Some(feed))) = self.operations.get(&id) else {
            return;
        };
        let Some(peer) = self
            .peers
            .get(&peer_id)
            .filter(|p| p.state == PeerState::Connected)
        else {
            return; // not known yet: its announcement will bring it
        };
        if feed.manifest == manifest {
            feed.offer(peer, false, false);
        }
    }

    /// Offers every running download the peers that now announce its
    /// manifest (complete or downloading it); a download ignores those it
    /// already has.
    pub(super) fn offer_sources(&self) {
        for id in self.operations.keys() {
            self.offer_sources_to(id, false);
        }
    }

    /// Offers the download of `id` the connected peers that announce its
    /// manifest. With `probe` (when the download starts), also every other
    /// connected peer, tentatively: one that started downloading it at the
    /// same moment has not announced it yet, and asking it (one round
    /// trip) finds it at once instead of after its next ping; the others
    /// refuse and are dropped quietly. Both sides learn: a peer we
    /// subscribe to takes us as a source too (`on_serve_event`).
    fn offer_sources_to(&self, id: &GameId, probe: bool) {
        let Some(Operation::Download(_, Some(feed))) = self.operations.get(id) else {
            return;
        };
        for peer in self.peers.connected() {
            let announced = peer
                .games
                .iter()
                .find(|g| &g.id == id && g.manifest.as_deref() == Some(feed.manifest.as_str()));
            match announced {
                Some(game) => feed.offer(peer, game.complete, false),
                None if probe => feed.offer(peer, false, true),
                None => {}
            }
        }
    }

    /// A peer is still preparing the file list `GetGame` waits for.
    pub(super) fn on_gather_event(&mut self, event: GatherEvent) {
        match event {
            GatherEvent::Preparing { id, peer, progress } => {
                self.publish(PeerEvent::PreparingGameFiles {
                    id,
                    peer_id: peer.peer_id,
                    peer_name: peer.name,
                    bytes_done: progress.bytes_done,
                    bytes_total: progress.bytes_total,
                });
            }
        }
    }

    /// `ListGameFiles`: the entries of the gathered file list from
    /// `offset` on, as many as fit in [`PAGE_BYTES`] (at least one), so a
    /// reply stays within one IPC line for any game.
    pub(super) fn list_game_files(
        &self,
        id: GameId,
        offset: u64,
    ) -> Result<GameFilesPage, IpcError> {
        let manifest = self.manifests.get(&id).ok_or_else(|| {
            IpcError::new(
                ErrorCode::NotRunning,
                format!("no file list for {id} yet: send GetGame first"),
            )
        })?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if start > manifest.files.len() {
            return Err(IpcError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "offset {offset} is past the {} entries of {id}",
                    manifest.files.len()
                ),
            ));
        }
        let mut files = Vec::new();
        let mut bytes = 0;
        for file in &manifest.files[start..] {
            let entry = GameFile::from(file);
            // Quotes, separators and field names around the path: a
            // generous bound on the encoded entry, no encoding needed.
            let cost = entry.relative_path.len() * 6 + 64;
            if !files.is_empty() && bytes + cost > PAGE_BYTES {
                break;
            }
            bytes += cost;
            files.push(entry);
        }
        let end = start + files.len();
        Ok(GameFilesPage {
            id,
            version: manifest.version.clone(),
            offset,
            files,
            next: (end < manifest.files.len()).then_some(end as u64),
        })
    }

    /// `DownloadGameFiles`: checks the request against the gathered file
    /// list and prepares the transfer (`core::space` checks free space and
    /// starts it). An empty `files` means all of them; `version.ini` is
    /// always included (it commits the download).
    pub(super) fn prepare_download(
        &mut self,
        id: GameId,
        requested: Vec<String>,
    ) -> Result<PreparedDownload, IpcError> {
        let game_dir = self
            .game_dir
            .clone()
            .ok_or_else(|| IpcError::new(ErrorCode::NoGameDir, "no game directory is set"))?;
        let client = self.peer_client()?;
        if self.operations.contains_key(&id) {
            return Err(IpcError::new(
                ErrorCode::Busy,
                format!("an operation on {id} is already running"),
            ));
        }
        let manifest = self.manifests.get(&id).ok_or_else(|| {
            IpcError::new(
                ErrorCode::NotRunning,
                format!("no file list for {id} yet: send GetGame first"),
            )
        })?;
        let mut files = if requested.is_empty() {
            manifest.files.clone()
        } else {
            let by_path: std::collections::HashMap<
                &str,
                &lanspread_proto::model::GameFileDescription,
            > = manifest
                .files
                .iter()
                .map(|f| (f.relative_path.as_str(), f))
                .collect();
            let mut chosen = Vec::with_capacity(requested.len());
            let mut seen = std::collections::HashSet::new();
            for path in &requested {
                let Some(&file) = by_path.get(path.as_str()) else {
                    return Err(IpcError::new(
                        ErrorCode::InvalidRequest,
                        format!("{path} is not in the file list of {id}"),
                    ));
                };
                if seen.insert(path.as_str()) {
                    chosen.push(file.clone());
                }
            }
            chosen
        };
        if !files.iter().any(|f| f.relative_path == SENTINEL)
            && let Some(sentinel) = manifest.files.iter().find(|f| f.relative_path == SENTINEL)
        {
            files.push(sentinel.clone());
        }
        let sources: Vec<Source> = manifest
            .holders
            .iter()
            .filter(|h| {
                self.peers
                    .get(&h.peer_id)
                    .is_some_and(|p| p.state == PeerState::Connected)
            })
            .map(|h| Source {
                peer_id: h.peer_id.clone(),
                addr: h.addr,
                complete: h.complete,
                tentative: false,
            })
            .collect();
        if sources.is_empty() {
            return Err(IpcError::new(
                ErrorCode::NoPeers,
                format!("no peer that listed {id} is connected any more"),
            ));
        }
        let started = DownloadStarted {
            id: id.clone(),
            files: files.len() as u32,
            bytes: files.iter().map(|f| f.size).sum(),
        };
        let request = DownloadRequest {
            id: id.clone(),
            version: manifest.version.clone(),
            root: game_dir.join(id.as_str()),
            manifest: std::sync::Arc::new(manifest.files.clone()),
            files: std::sync::Arc::new(files),
            sources,
            state_dir: self.scanner.state_dir.path().to_owned(),
            replaces: self.own_manifest(&id),
        };
        Ok(PreparedDownload {
            request,
            client,
            started,
            partial: None,
        })
    }

    /// Starts a prepared download whose space check passed: it joins the
    /// swarm (its verified chunks are served from now on, and peers that
    /// start holding its manifest are offered to it).
    pub(super) fn start_download(&mut self, prepared: PreparedDownload, cancel: CancellationToken) {
        let events = EventSender::new(self.inbox.clone());
        let id = prepared.request.id.clone();
        let id_of_download = id.clone();
        let partial = prepared.partial.unwrap_or_else(|| {
            Partial::new(
                id.clone(),
                prepared.request.version.clone(),
                std::sync::Arc::clone(&prepared.request.manifest),
                prepared.request.root.clone(),
            )
        });
        self.swarm.register(std::sync::Arc::clone(&partial));
        let (sources, new_sources) = tokio::sync::mpsc::channel(64);
        self.operation_started(
            id,
            Operation::Download(
                cancel.clone(),
                Some(SourceFeed {
                    manifest: partial.manifest.to_hex(),
                    sources,
                }),
            ),
        );
        let link = SwarmLink {
            swarm: std::sync::Arc::clone(&self.swarm),
            partial,
            new_sources,
        };
        tokio::spawn(download::run(
            prepared.request,
            prepared.client,
            events,
            cancel,
            link,
        ));
        // Peers may already announce the manifest, or be starting to
        // download it too.
        self.offer_sources_to(&id_of_download, true);
    }

    /// `CancelDownload`: tells the download to stop; it ends with
    /// `DownloadGameFilesCancelled`.
    pub(super) fn cancel_download(&mut self, id: GameId) -> Result<CancelRequested, IpcError> {
        match self.operations.get(&id) {
            Some(Operation::Download(cancel, _)) => {
                cancel.cancel();
                Ok(CancelRequested { id })
            }
            _ => Err(IpcError::new(
                ErrorCode::NotRunning,
                format!("no download of {id} is running"),
            )),
        }
    }

    pub(super) fn on_download_event(&mut self, event: DownloadEvent) {
        let (ended, published) = match event {
            DownloadEvent::Begin { id } => (None, PeerEvent::DownloadGameFilesBegin { id }),
            DownloadEvent::Progress {
                id,
                bytes_done,
                bytes_total,
                rate,
                peers,
                sources,
                bytes_reused,
            } => {
                let (bytes_from_seeders, bytes_from_downloaders) = bytes_by_kind(&sources);
                (
                    None,
                    PeerEvent::DownloadGameFilesProgress {
                        id,
                        bytes_done,
                        bytes_total,
                        rate,
                        peers,
                        bytes_from_seeders,
                        bytes_from_downloaders,
                        sources,
                        bytes_reused,
                    },
                )
            }
            DownloadEvent::Finished { id, stats } => {
                let (bytes_from_seeders, bytes_from_downloaders) = bytes_by_kind(&stats.per_peer);
                (
                    Some(id.clone()),
                    PeerEvent::DownloadGameFilesFinished {
                        id,
                        bytes: stats.bytes,
                        chunks_fetched: stats.chunks_fetched,
                        chunks_resumed: stats.chunks_resumed,
                        millis: (stats.seconds * 1000.0) as u64,
                        bytes_from_seeders,
                        bytes_from_downloaders,
                        bytes_reused: stats.bytes_reused,
                        chunks_reused: stats.chunks_reused,
                    },
                )
            }
            DownloadEvent::Failed { id, error } => (
                Some(id.clone()),
                PeerEvent::DownloadGameFilesFailed {
                    id,
                    reason: err_chain(&error),
                },
            ),
            DownloadEvent::Cancelled { id } => (
                Some(id.clone()),
                PeerEvent::DownloadGameFilesCancelled { id },
            ),
        };
        let finished = matches!(published, PeerEvent::DownloadGameFilesFinished { .. });
        self.publish(published);
        if let Some(id) = ended {
            self.operation_ended(&id);
            if finished {
                // The install runs by itself (step 6 of
                // `docs/download.md#steps`).
                if let Err(err) = self.start_install(id.clone(), true) {
                    self.publish(PeerEvent::InstallGameFailed {
                        id,
                        reason: err.message,
                    });
                }
            }
        }
    }
}
