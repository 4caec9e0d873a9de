//! Verifying a downloaded game (`VerifyGame`, docs/ipc.md#verify): rehash
//! every file chunk by chunk against a manifest, report each file that
//! differs, and with `repair` fetch only the bad chunks again from the
//! peers that serve that file identically, check each against its BLAKE3
//! hash and write it in place. One task per verify; it reports through
//! [`VerifyEvent`]s and stops when cancelled (at shutdown).
//!
//! It never writes anything but verified chunk bytes, at their offsets, in
//! files of the manifest (a missing file is created, a file of the wrong
//! length is set to the manifest's length first).

use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lanspread_proto::ipc::DifferingFile;
use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::CHUNK_SIZE;
use tokio_util::sync::CancellationToken;

use crate::download::Source;
use crate::event_sender::EventSender;
use crate::manifest_id::{ChunkTable, ManifestId};
use crate::transport::PeerClient;

/// How often progress is reported (at most).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Longest one chunk fetch of a repair may take.
pub const REPAIR_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a verify needs.
#[derive(Debug)]
pub struct VerifyRequest {
    pub id: GameId,
    /// The game root (`<game_dir>/<id>`).
    pub root: PathBuf,
    /// The version and manifest to check against.
    pub version: Version,
    pub files: Vec<GameFileDescription>,
    /// Peers that offered this manifest; repairs fetch from them.
    pub sources: Vec<Source>,
    /// Fetch the bad chunks again.
    pub repair: bool,
}

/// What a verify reports.
#[derive(Debug)]
pub enum VerifyEvent {
    /// The manifest is known; `peers` offered it (0: our own).
    Begin {
        id: GameId,
        peers: u32,
    },
    Progress {
        id: GameId,
        bytes_done: u64,
        bytes_total: u64,
    },
    Finished {
        id: GameId,
        bytes: u64,
        differing: Vec<DifferingFile>,
        repaired_chunks: u64,
    },
    Failed {
        id: GameId,
        reason: String,
    },
}

/// Runs one verify (and repair) to its end and reports it.
pub async fn run(
    request: VerifyRequest,
    client: Option<Arc<PeerClient>>,
    events: EventSender<VerifyEvent>,
    cancel: CancellationToken,
) {
    let id = request.id.clone();
    let request = Arc::new(request);
    let hashing = {
        let (request, events, cancel) = (Arc::clone(&request), events.clone(), cancel.clone());
        tokio::task::spawn_blocking(move || rehash(&request, &events, &cancel))
    };
    let event = match hashing.await {
        Err(_) => VerifyEvent::Failed {
            id,
            reason: "rehashing panicked".into(),
        },
        Ok(None) => VerifyEvent::Failed {
            id,
            reason: "cancelled".into(),
        },
        Ok(Some(mut differing)) => {
            let mut repaired_chunks = 0;
            if request.repair {
                match &client {
                    Some(client) => {
                        repaired_chunks = repair(&request, client, &mut differing, &cancel).await;
                    }
                    None => tracing::warn!(game = %id, "no peer to repair from"),
                }
            }
            let bytes = request.files.iter().map(|f| f.size).sum();
            tracing::info!(game = %id, bytes, differing = differing.len(), repaired_chunks, "verify finished");
            VerifyEvent::Finished {
                id,
                bytes,
                differing,
                repaired_chunks,
            }
        }
    };
    let _ = events.send(event).await;
}

/// Hashes every chunk; the files that differ, or `None` when cancelled.
/// Blocking.
fn rehash(
    request: &VerifyRequest,
    events: &EventSender<VerifyEvent>,
    cancel: &CancellationToken,
) -> Option<Vec<DifferingFile>> {
    let total: u64 = request.files.iter().map(|f| f.size).sum();
    let mut done = 0u64;
    let mut last_progress = Instant::now();
    let mut differing = Vec::new();
    let mut buffer = vec![0u8; CHUNK_SIZE as usize];
    for file in request.files.iter().filter(|f| !f.is_dir) {
        let all_chunks = || (0..file.chunk_hashes.len() as u32).collect::<Vec<_>>();
        let path = request.root.join(&file.relative_path);
        let opened = std::fs::symlink_metadata(&path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .and_then(|meta| Some((std::fs::File::open(&path).ok()?, meta.len())));
        let Some((handle, size)) = opened else {
            differing.push(differs(file, "missing", all_chunks()));
            done += file.size;
            continue;
        };
        if size != file.size {
            differing.push(differs(file, "size", all_chunks()));
            done += file.size;
            continue;
        }
        let mut bad = Vec::new();
        for (c, expected) in file.chunk_hashes.iter().enumerate() {
            if cancel.is_cancelled() {
                return None;
            }
            let offset = c as u64 * CHUNK_SIZE;
            let length = (file.size - offset).min(CHUNK_SIZE) as usize;
            let matches = crate::faults::read_error()
                .and_then(|()| handle.read_exact_at(&mut buffer[..length], offset))
                .map(|()| blake3::hash(&buffer[..length]).to_hex().as_str() == expected)
                .unwrap_or(false);
            if !matches {
                bad.push(c as u32);
            }
            done += length as u64;
            if last_progress.elapsed() >= PROGRESS_INTERVAL {
                last_progress = Instant::now();
                let _ = events.blocking_send(VerifyEvent::Progress {
                    id: request.id.clone(),
                    bytes_done: done,
                    bytes_total: total,
                });
            }
        }
        if !bad.is_empty() {
            differing.push(differs(file, "content", bad));
        }
    }
    Some(differing)
}

fn differs(file: &GameFileDescription, problem: &str, bad_chunks: Vec<u32>) -> DifferingFile {
    DifferingFile {
        relative_path: file.relative_path.clone(),
        problem: problem.into(),
        bad_chunks,
        repaired: false,
    }
}

/// Fetches each bad chunk from a peer serving its file identically,
/// checks it and writes it in place. Returns the chunks repaired.
async fn repair(
    request: &VerifyRequest,
    client: &PeerClient,
    differing: &mut [DifferingFile],
    cancel: &CancellationToken,
) -> u64 {
    let mut repaired = 0;
    let manifest = ManifestId::of(&request.version, &request.files).to_hex();
    let table = ChunkTable::new(&request.files);
    for entry in differing.iter_mut() {
        let Some((file_idx, file)) = request
            .files
            .iter()
            .enumerate()
            .find(|(_, f)| f.relative_path == entry.relative_path)
        else {
            continue;
        };
        let path = request.root.join(&file.relative_path);
        if file.size == 0 {
            // An empty file has no chunks to fetch: recreate it.
            let path = path.clone();
            entry.repaired = tokio::task::spawn_blocking(move || write_chunk(&path, 0, 0, &[]))
                .await
                .is_ok_and(|written| written.is_ok());
            continue;
        }
        let mut fixed = 0;
        for &c in &entry.bad_chunks {
            if cancel.is_cancelled() {
                return repaired;
            }
            let offset = u64::from(c) * CHUNK_SIZE;
            let length = (file.size - offset).min(CHUNK_SIZE);
            let expected = &file.chunk_hashes[c as usize];
            let global = table.index(file_idx, c as usize) as u32;
            for source in &request.sources {
                let fetched = client
                    .fetch_chunk(
                        source.addr,
                        &request.id,
                        &manifest,
                        global,
                        Vec::new(),
                        |g| (g == global).then_some(length),
                        |_| crate::transport::ChunkData::default(),
                        REPAIR_CHUNK_TIMEOUT,
                    )
                    .await;
                let bytes = match fetched {
                    Ok((_, data)) if data.hash().to_hex().as_str() == expected => data.to_vec(),
                    Ok(_) => {
                        tracing::warn!(game = %request.id, peer = %source.peer_id, path = %file.relative_path, chunk = c, "repair chunk failed verification");
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(game = %request.id, peer = %source.peer_id, cause = %err, "repair fetch failed");
                        continue;
                    }
                };
                let (path, size) = (path.clone(), file.size);
                let written =
                    tokio::task::spawn_blocking(move || write_chunk(&path, size, offset, &bytes))
                        .await;
                match written {
                    Ok(Ok(())) => {
                        fixed += 1;
                        repaired += 1;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(game = %request.id, path = %file.relative_path, cause = %err, "cannot write repaired chunk");
                    }
                    Err(_) => {}
                }
                break;
            }
        }
        entry.repaired = fixed == entry.bad_chunks.len();
    }
    repaired
}

/// Writes a verified chunk at its offset and syncs it. Blocking.
fn write_chunk(
    path: &std::path::Path,
    size: u64,
    offset: u64,
    bytes: &[u8],
) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    if file.metadata()?.len() != size {
        file.set_len(size)?;
    }
    file.write_all_at(bytes, offset)?;
    file.sync_data()
}
