//! Step 1 of a download: ask the peers that hold the latest version for
//! their manifests, check each one (a lying peer costs only its own
//! answer), and settle on the manifest most of them agree on. A peer still
//! preparing its file list answers at once with its progress; gathering
//! then waits for it (reporting the progress) only while no peer has sent
//! a valid list, and gives up on a peer whose progress stalls.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::future::join_all;
use lanspread_proto::model::{GameFileDescription, GameId, Preparing, Version};
use lanspread_proto::wire::{CHUNK_SIZE, MAX_MANIFEST_FILES, MAX_PATH_BYTES, Request, Response};

use crate::event_sender::EventSender;
use crate::library::{SENTINEL, version_ini::MAX_VERSION_INI_BYTES};
use crate::serve::check_relative_path;
use crate::transport::PeerClient;

/// How often a peer that is preparing its file list is asked again.
const PREPARING_POLL: Duration = Duration::from_secs(1);

/// A peer whose preparation did not advance for this long is given up on.
const PREPARING_STALL: Duration = Duration::from_secs(60);

/// A peer to ask.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub peer_id: String,
    /// Its name, for progress shown to people.
    pub name: String,
    pub addr: SocketAddr,
    /// It holds the complete game (else it is downloading it).
    pub complete: bool,
}

/// What gathering reports while it runs.
#[derive(Debug)]
pub enum GatherEvent {
    /// `peer` is still computing the file list of `id`.
    Preparing {
        id: GameId,
        peer: Candidate,
        progress: Preparing,
    },
}

/// Why no file list could be gathered.
#[derive(Debug, thiserror::Error)]
#[error("no peer answered with a valid file list for {id}: {}", problems.join("; "))]
pub struct GatherError {
    pub id: GameId,
    /// Per peer, what was wrong with its answer.
    pub problems: Vec<String>,
}

/// The agreed manifest and the peers that hold exactly it.
#[derive(Clone, Debug)]
pub struct GatheredManifest {
    pub version: Version,
    pub files: Vec<GameFileDescription>,
    /// The peers that answered with exactly this manifest (a peer with
    /// another one under the same version serves none of its chunks:
    /// chunks are named by the manifest's digest).
    pub holders: Vec<Holder>,
}

/// One peer that answered with the agreed manifest.
#[derive(Clone, Debug)]
pub struct Holder {
    pub peer_id: String,
    pub addr: SocketAddr,
    /// It holds the complete game (else it is downloading it).
    pub complete: bool,
}

/// Asks every candidate for the manifest of `id` at `version`.
pub async fn gather(
    client: &PeerClient,
    id: &GameId,
    version: &Version,
    candidates: Vec<Candidate>,
    events: &EventSender<GatherEvent>,
) -> Result<GatheredManifest, GatherError> {
    let request = Request::GetGame { id: id.clone() };
    let mut pending = candidates;
    let mut valid: Vec<(Candidate, Vec<GameFileDescription>)> = Vec::new();
    let mut problems = Vec::new();
    // Per peer: the bytes it had prepared, and since when.
    let mut advanced: HashMap<String, (u64, Instant)> = HashMap::new();
    loop {
        let answers = join_all(pending.iter().map(|c| client.request(c.addr, &request))).await;
        let mut preparing = Vec::new();
        for (candidate, answer) in pending.into_iter().zip(answers) {
            let checked = match answer {
                Ok(Response::Game {
                    id: answered,
                    version: answered_version,
                    files,
                }) if &answered == id && &answered_version == version => {
                    validate_manifest(&files).map(|()| Some(files))
                }
                Ok(Response::Preparing {
                    id: answered,
                    version: answered_version,
                    bytes_done,
                    bytes_total,
                }) if &answered == id && &answered_version == version => {
                    let now = Instant::now();
                    let (before, since) = *advanced
                        .entry(candidate.peer_id.clone())
                        .or_insert((bytes_done, now));
                    if bytes_done > before {
                        advanced.insert(candidate.peer_id.clone(), (bytes_done, now));
                    }
                    if bytes_done <= before && now.duration_since(since) > PREPARING_STALL {
                        Err(format!(
                            "its file list stopped advancing at {bytes_done} of {bytes_total} bytes"
                        ))
                    } else {
                        let progress = Preparing {
                            bytes_done,
                            bytes_total,
                        };
                        let _ = events
                            .send(GatherEvent::Preparing {
                                id: id.clone(),
                                peer: candidate.clone(),
                                progress,
                            })
                            .await;
                        Ok(None)
                    }
                }
                Ok(Response::Game { version: v, .. } | Response::Preparing { version: v, .. }) => {
                    Err(format!("answered for another game or version ({v})"))
                }
                Ok(Response::Error(err)) => Err(format!("refused: {}", err.message)),
                Ok(other) => Err(format!("answered {other:?}")),
                Err(err) => Err(crate::error_chain::err_chain(&err)),
            };
            match checked {
                Ok(Some(files)) => valid.push((candidate, files)),
                Ok(None) => preparing.push(candidate),
                Err(problem) => {
                    tracing::warn!(peer = %candidate.peer_id, game = %id, %problem, "peer's manifest not used");
                    problems.push(format!("{}: {problem}", candidate.peer_id));
                }
            }
        }
        // A valid list is enough: never wait on hashing it does not need.
        if !valid.is_empty() || preparing.is_empty() {
            break;
        }
        tokio::time::sleep(PREPARING_POLL).await;
        pending = preparing;
    }
    agree(id, version, valid).ok_or_else(|| GatherError {
        id: id.clone(),
        problems,
    })
}

/// The manifest most complete holders agree on (then most peers), and the
/// peers that sent exactly it.
fn agree(
    id: &GameId,
    version: &Version,
    valid: Vec<(Candidate, Vec<GameFileDescription>)>,
) -> Option<GatheredManifest> {
    // Complete holders decide; downloaders only count among equals (they
    // hold what some complete holder offered).
    let reference = valid
        .iter()
        .max_by_key(|(_, files)| {
            let same = valid.iter().filter(|(_, f)| f == files);
            let complete = same.clone().filter(|(c, _)| c.complete).count();
            (complete, same.count())
        })
        .map(|(_, files)| files.clone())?;
    tracing::debug!(game = %id, peers = valid.len(), files = reference.len(), "file list agreed");
    let holders = valid
        .into_iter()
        .filter(|(_, files)| *files == reference)
        .map(|(candidate, _)| Holder {
            peer_id: candidate.peer_id,
            addr: candidate.addr,
            complete: candidate.complete,
        })
        .collect();
    Some(GatheredManifest {
        version: version.clone(),
        files: reference,
        holders,
    })
}

/// Checks a peer's manifest before anything is planned or written from it.
pub fn validate_manifest(files: &[GameFileDescription]) -> Result<(), String> {
    if files.len() > MAX_MANIFEST_FILES {
        return Err(format!(
            "{} entries (at most {MAX_MANIFEST_FILES})",
            files.len()
        ));
    }
    let mut seen = HashSet::new();
    let mut sentinels = 0;
    for file in files {
        let path = &file.relative_path;
        if path.len() > MAX_PATH_BYTES {
            return Err(format!(
                "a path of {} bytes (at most {MAX_PATH_BYTES})",
                path.len()
            ));
        }
        check_relative_path(path).map_err(|err| err.message)?;
        if !seen.insert(path.as_str()) {
            return Err(format!("{path:?} listed twice"));
        }
        if file.is_dir {
            if file.size != 0 || !file.chunk_hashes.is_empty() {
                return Err(format!("directory {path:?} has a size or hashes"));
            }
            continue;
        }
        let chunks = file.size.div_ceil(CHUNK_SIZE);
        if file.chunk_hashes.len() as u64 != chunks {
            return Err(format!(
                "{path:?}: {} hashes for {} bytes ({chunks} chunks)",
                file.chunk_hashes.len(),
                file.size
            ));
        }
        if let Some(bad) = file
            .chunk_hashes
            .iter()
            .find(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!("{path:?}: {bad:?} is not a BLAKE3 hash"));
        }
        if path == SENTINEL {
            sentinels += 1;
            if file.size > MAX_VERSION_INI_BYTES {
                return Err(format!("version.ini of {} bytes", file.size));
            }
        }
    }
    // Every file's folders must be folders, not files (one set lookup per
    // ancestor: linear in the manifest, whatever its size).
    let regular: HashSet<&str> = files
        .iter()
        .filter(|f| !f.is_dir)
        .map(|f| f.relative_path.as_str())
        .collect();
    for file in files {
        let mut parent = file.relative_path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            if regular.contains(up) {
                return Err(format!(
                    "{:?} lies inside the file {up:?}",
                    file.relative_path
                ));
            }
            parent = up;
        }
    }
    if sentinels != 1 {
        return Err("no version.ini".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> GameFileDescription {
        GameFileDescription {
            relative_path: path.into(),
            is_dir: false,
            size,
            chunk_hashes: (0..size.div_ceil(CHUNK_SIZE))
                .map(|_| "0".repeat(64))
                .collect(),
        }
    }

    #[test]
    fn lying_manifests_are_refused() {
        let good = vec![
            file("version.ini", 3),
            file("a/b.eti", CHUNK_SIZE + 1),
            file("empty", 0),
        ];
        assert_eq!(validate_manifest(&good), Ok(()));
        let cases: Vec<Vec<GameFileDescription>> = vec![
            vec![file("version.ini", 3), file("../escape", 1)],
            vec![file("version.ini", 3), file("/abs", 1)],
            vec![file("version.ini", 3), file("local/x", 1)],
            vec![file("version.ini", 3), file("a\\b", 1)],
            vec![file("version.ini", 3), file("a", 1), file("a", 1)],
            vec![file("a", 1)],
            vec![file("version.ini", 1 << 20)],
            vec![file("version.ini", 3), file("a", 1), file("a/b", 1)],
            {
                let mut f = file("big", CHUNK_SIZE * 2);
                f.chunk_hashes.pop();
                vec![file("version.ini", 3), f]
            },
            {
                let mut f = file("x", 5);
                f.chunk_hashes[0] = "nothex".into();
                vec![file("version.ini", 3), f]
            },
            {
                let mut d = file("dir", 0);
                d.is_dir = true;
                d.size = 5;
                vec![file("version.ini", 3), d]
            },
        ];
        for (i, case) in cases.iter().enumerate() {
            assert!(validate_manifest(case).is_err(), "case {i} accepted");
        }
        let huge: Vec<_> = (0..=MAX_MANIFEST_FILES)
            .map(|i| file(&format!("f{i}"), 0))
            .collect();
        assert!(validate_manifest(&huge).is_err());
    }
}
