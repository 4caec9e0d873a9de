//! Lab tests of delta updates (`docs/download.md#data-that-moved`): real
//! daemons on two lab hosts; what crossed the network is read from the
//! downloader's veth counters, not from the daemons.

mod common;
mod lab_harness;

use std::path::Path;

use common::write;
use lab_harness::game::*;
use lab_harness::{Lab, LabDaemon};
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::model::GameId;
use lanspread_proto::wire::{CHUNK_SIZE, SIGNATURE_BLOCK};

/// Deterministic bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(&seed.to_le_bytes())
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Writes a game version: `version.ini` and `files` (path, bytes).
fn game(dir: &Path, version: &str, files: &[(String, Vec<u8>)]) {
    let root = dir.join(GAME);
    write(
        &root.join("version.ini"),
        format!("version={version}\n").as_bytes(),
    );
    for (path, bytes) in files {
        write(&root.join(path), bytes);
    }
}

/// What one update did: bytes the downloader's link received, and the
/// finished event's accounting.
#[derive(Debug)]
struct Update {
    received: u64,
    reused: u64,
    fetched: u64,
}

/// Updates `leech` to the latest version its peer offers.
async fn update(lab: &Lab, leech: &LabDaemon) -> Update {
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let before = lab.received_bytes("h2");
    let mut client = leech.client().await;
    let id = GameId::new(GAME).unwrap();
    let _: lanspread_proto::ipc::GameFilesResult = client.fetch_latest(&id).await.unwrap();
    client.download(&id, vec![]).await.unwrap();
    let finished = common::wait_for_event(
        &mut events,
        std::time::Duration::from_secs(120),
        "the update's end",
        |e| {
            matches!(
                e,
                PeerEvent::DownloadGameFilesFinished { .. }
                    | PeerEvent::DownloadGameFilesFailed { .. }
            )
        },
    )
    .await;
    let received = lab.received_bytes("h2") - before;
    match finished.event {
        PeerEvent::DownloadGameFilesFinished {
            bytes_reused,
            bytes_from_seeders,
            bytes_from_downloaders,
            ..
        } => Update {
            received,
            reused: bytes_reused,
            fetched: bytes_from_seeders + bytes_from_downloaders,
        },
        other => panic!("update failed: {other:?}"),
    }
}

/// What the update may receive besides the changed bytes: the manifest
/// (a JSON line per file and 70 bytes per chunk hash), the block
/// signatures of every chunk of `signed` bytes (hex, at most), and the
/// pings and lists of the few seconds it takes.
fn metadata(files: usize, bytes: u64, signed: u64) -> u64 {
    let manifest = files as u64 * 160 + bytes.div_ceil(CHUNK_SIZE) * 70;
    let blocks = signed.div_ceil(SIGNATURE_BLOCK);
    let signatures = blocks * 24 + signed.div_ceil(CHUNK_SIZE) * 16;
    manifest + signatures + 64 * 1024
}

/// Two lab hosts: h1 seeds version 2.0 (`v2`), h2 holds 1.0 (`v1`) and
/// sees h1. Tests destructure it in field order, so the daemons go
/// first, then the lab, then the folders.
struct Updating {
    old: tempfile::TempDir,
    new: tempfile::TempDir,
    lab: Lab,
    seed: LabDaemon,
    leech: LabDaemon,
}

impl Updating {
    async fn start(v1: &[(String, Vec<u8>)], v2: &[(String, Vec<u8>)]) -> Self {
        let (old, new) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        game(old.path(), "1.0", v1);
        game(new.path(), "2.0", v2);
        let lab = Lab::up(2);
        let seed = lab.spawn_daemon("h1", "seed", copy_game(new.path()));
        let leech = lab.spawn_daemon("h2", "leech", copy_game(old.path()));
        wait_peers(&leech, 1).await;
        Self {
            old,
            new,
            lab,
            seed,
            leech,
        }
    }
}

fn assert_same_files(expected: &Path, actual: &Path, files: &[(String, Vec<u8>)]) {
    for (path, _) in files {
        let want = std::fs::read(expected.join(GAME).join(path)).unwrap();
        let got = std::fs::read(actual.join(GAME).join(path)).unwrap();
        assert!(want == got, "{path} differs");
    }
    let sentinel = |dir: &Path| std::fs::read(dir.join(GAME).join("version.ini")).unwrap();
    assert_eq!(sentinel(expected), sentinel(actual));
}

/// Scenario (a): 5 % of the files changed in place, one file added, one
/// removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn an_update_of_files_changed_in_place_receives_little_more_than_the_changes() {
    let v1: Vec<(String, Vec<u8>)> = (0..20)
        .map(|i| (format!("data/{i:02}.eti"), noise(2 << 20, i)))
        .collect();
    let mut v2 = v1.clone();
    let overwrite = noise(512 << 10, 100);
    v2[0].1[300_001..300_001 + overwrite.len()].copy_from_slice(&overwrite);
    v2.pop(); // removed
    let added = noise(2 << 20, 101);
    v2.push(("data/added.eti".into(), added.clone()));
    let Updating {
        old: _old,
        new,
        lab,
        seed: _seed,
        leech,
    } = Updating::start(&v1, &v2).await;
    let done = update(&lab, &leech).await;
    let changed = (overwrite.len() + added.len()) as u64;
    let total: u64 = v2.iter().map(|(_, b)| b.len() as u64).sum();
    let allowance = metadata(v2.len(), total, (2 << 20) * 2);
    eprintln!(
        "measured: (a) changed {changed} bytes; the link received {} ({:.3}× the changes; {:.3}× less the metadata allowance of {allowance}); {done:?}",
        done.received,
        done.received as f64 / changed as f64,
        done.received.saturating_sub(allowance) as f64 / changed as f64,
    );
    assert_same_files(new.path(), &leech.games(), &v2);
    assert!(
        done.received <= changed * 11 / 10 + allowance,
        "received {} bytes for {changed} changed",
        done.received
    );
    let sentinel = "version=2.0\n".len() as u64;
    assert_eq!(
        done.reused + done.fetched,
        total + sentinel,
        "every byte accounted"
    );
}

/// The archive of scenario (b): `len` bytes, and the same with 1 MiB
/// inserted near its start (at 3 MiB + 12 345, not block-aligned).
fn archive_and_insertion(len: usize) -> (Vec<u8>, Vec<u8>, usize) {
    let archive = noise(len, 200);
    let inserted = noise(1 << 20, 201);
    let at = (3 << 20) + 12_345;
    let v2 = [&archive[..at], &inserted[..], &archive[at..]].concat();
    (archive, v2, inserted.len())
}

/// Scenario (b): one 256 MiB archive got 1 MiB inserted near its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn an_update_of_an_archive_with_data_inserted_receives_little_more_than_the_insertion() {
    let (archive, v2_archive, inserted) = archive_and_insertion(256 << 20);
    let small = ("readme.txt".to_string(), noise(10_000, 202));
    let v1 = vec![("game.eti".to_string(), archive), small.clone()];
    let v2 = vec![("game.eti".to_string(), v2_archive), small];
    let Updating {
        old: _old,
        new,
        lab,
        seed: _seed,
        leech,
    } = Updating::start(&v1, &v2).await;
    drop(v1);
    let done = update(&lab, &leech).await;
    let changed = inserted as u64;
    let total: u64 = v2.iter().map(|(_, b)| b.len() as u64).sum();
    let allowance = metadata(v2.len(), total, total);
    eprintln!(
        "measured: (b) changed {changed} bytes; the link received {} ({:.3}× the changes; {:.3}× less the metadata allowance of {allowance}); {done:?}",
        done.received,
        done.received as f64 / changed as f64,
        done.received.saturating_sub(allowance) as f64 / changed as f64,
    );
    assert_same_files(new.path(), &leech.games(), &v2);
    assert!(
        done.received <= changed * 11 / 10 + allowance,
        "received {} bytes for {changed} changed",
        done.received
    );
}

/// Scenario (b) on a 64 MiB archive, the downloader killed (SIGKILL)
/// while it assembles the chunks, then restarted: byte-identical, and the
/// second run fetches no more than the insertion and its block rounding
/// (nothing the first run verified is fetched again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn an_update_killed_while_it_assembles_moved_data_resumes_byte_identical() {
    let (archive, v2_archive, inserted) = archive_and_insertion(64 << 20);
    let v1 = vec![("game.eti".to_string(), archive)];
    let v2 = vec![("game.eti".to_string(), v2_archive)];
    let Updating {
        old: _old,
        new,
        lab,
        seed: _seed,
        leech,
    } = Updating::start(&v1, &v2).await;
    // Slow enough that the range fetches are still running when it dies
    // (the chunk at the insertion is assembled last).
    let limits = leech.ctl(&["limits", "--download", "100KiB"]);
    assert!(limits.status.success(), "{limits:?}");
    let mut client = leech.client().await;
    let id = GameId::new(GAME).unwrap();
    let _: lanspread_proto::ipc::GameFilesResult = client.fetch_latest(&id).await.unwrap();
    client.download(&id, vec![]).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !leech.log_text().contains("looked for moved data") {
        assert!(std::time::Instant::now() < deadline, "{}", leech.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let log = leech.log_text();
    assert!(
        !log.contains("assembled chunks from moved data"),
        "killed too late to test anything:\n{log}"
    );
    let work = leech.kill_hard();
    assert!(
        !work
            .path()
            .join("games")
            .join(GAME)
            .join("version.ini")
            .exists()
    );

    let leech = lab.spawn_in("h2", "leech", work, &[]);
    wait_peers(&leech, 1).await;
    let unlimited = leech.ctl(&["limits", "--download", "0"]);
    assert!(unlimited.status.success(), "{unlimited:?}");
    let done = update(&lab, &leech).await;
    eprintln!("measured: after SIGKILL, the second run: {done:?}");
    assert_same_files(new.path(), &leech.games(), &v2);
    let block = SIGNATURE_BLOCK;
    assert!(
        done.fetched <= inserted as u64 + 2 * block + 16,
        "the second run fetched {} bytes for an insertion of {inserted}",
        done.fetched
    );
}
