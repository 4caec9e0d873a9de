//! Step 1 of a download: ask the peers that hold the latest version for
//! their manifests, check each one (a lying peer costs only its own
//! answer), and settle on the manifest most of them agree on.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use futures::future::join_all;
use lanspread_proto::model::{GameFileDescription, GameId, Version};
use lanspread_proto::wire::{CHUNK_SIZE, Request, Response};

use crate::library::{SENTINEL, version_ini::MAX_VERSION_INI_BYTES};
use crate::serve::check_relative_path;
use crate::transport::PeerClient;

/// Most entries a manifest may have.
pub const MAX_MANIFEST_FILES: usize = 100_000;

/// The agreed manifest and who serves which of its entries.
#[derive(Clone, Debug)]
pub struct GatheredManifest {
    pub version: Version,
    pub files: Vec<GameFileDescription>,
    /// Each answering peer with the entries it announced, by path.
    pub holders: Vec<Holder>,
}

/// One peer that answered with a valid manifest.
#[derive(Clone, Debug)]
pub struct Holder {
    pub peer_id: String,
    pub addr: SocketAddr,
    pub files: HashMap<String, GameFileDescription>,
}

/// Asks every holder for the manifest of `id` at `version`.
pub async fn gather(
    client: &PeerClient,
    id: &GameId,
    version: &Version,
    holders: Vec<(String, SocketAddr)>,
) -> Result<GatheredManifest, String> {
    let request = Request::GetGame { id: id.clone() };
    let answers = join_all(
        holders
            .iter()
            .map(|(_, addr)| client.request(*addr, &request)),
    )
    .await;
    let mut valid: Vec<(String, SocketAddr, Vec<GameFileDescription>)> = Vec::new();
    let mut problems = Vec::new();
    for ((peer_id, addr), answer) in holders.into_iter().zip(answers) {
        let checked = match answer {
            Ok(Response::Game {
                id: answered,
                version: answered_version,
                files,
            }) if &answered == id && &answered_version == version => {
                validate_manifest(&files).map(|()| files)
            }
            Ok(Response::Game { version: v, .. }) => {
                Err(format!("answered for another game or version ({v})"))
            }
            Ok(Response::Error(err)) => Err(format!("refused: {}", err.message)),
            Ok(other) => Err(format!("answered {other:?}")),
            Err(err) => Err(err.to_string()),
        };
        match checked {
            Ok(files) => valid.push((peer_id, addr, files)),
            Err(problem) => {
                tracing::warn!(peer = %peer_id, game = %id, %problem, "peer's manifest not used");
                problems.push(format!("{peer_id}: {problem}"));
            }
        }
    }
    // The manifest most peers agree on.
    let reference = valid
        .iter()
        .max_by_key(|(_, _, files)| valid.iter().filter(|(_, _, f)| f == files).count())
        .map(|(_, _, files)| files.clone())
        .ok_or_else(|| {
            format!(
                "no peer answered with a valid file list for {id}: {}",
                problems.join("; ")
            )
        })?;
    Ok(GatheredManifest {
        version: version.clone(),
        files: reference,
        holders: valid
            .into_iter()
            .map(|(peer_id, addr, files)| Holder {
                peer_id,
                addr,
                files: files
                    .into_iter()
                    .map(|f| (f.relative_path.clone(), f))
                    .collect(),
            })
            .collect(),
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
    // Every file's folders must be folders, not files.
    for file in files {
        let mut parent = file.relative_path.as_str();
        while let Some((up, _)) = parent.rsplit_once('/') {
            if files.iter().any(|f| f.relative_path == up && !f.is_dir) {
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
