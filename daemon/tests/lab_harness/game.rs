//! The game the lab tests move around: made once, copied to seeders,
//! downloaded through IPC and compared byte for byte.

use std::path::Path;
use std::time::Duration;

use crate::common::{wait_for_event, write};
use crate::lab_harness::LabDaemon;
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{GameFilesResult, PeerEvent};
use lanspread_proto::model::{GameFile, GameId};

pub const GAME: &str = "openarena";
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

pub fn id() -> GameId {
    GameId::new(GAME).unwrap()
}

/// Writes a game of `big` bytes (plus small files, an empty file, nested
/// folders) once, so every seeder can copy the same bytes.
pub fn make_game(big: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(GAME);
    let mut data = vec![0u8; big as usize];
    blake3::Hasher::new()
        .update(b"lanspread lab game")
        .finalize_xof()
        .fill(&mut data);
    write(&root.join("pak0.eti"), &data);
    write(&root.join("maps/deep/dm1.eti"), &data[..123_457]);
    write(&root.join("empty.txt"), b"");
    write(&root.join("version.ini"), b"version=0.8.8\n");
    dir
}

pub fn copy_game(from: &Path) -> impl FnOnce(&Path) {
    let from = from.join(GAME);
    move |games| copy_tree(&from, &games.join(GAME))
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

pub fn assert_identical(expected: &Path, actual: &Path) {
    for rel in ["pak0.eti", "maps/deep/dm1.eti", "empty.txt", "version.ini"] {
        let want = blake3::hash(&std::fs::read(expected.join(GAME).join(rel)).unwrap());
        let got = blake3::hash(&std::fs::read(actual.join(GAME).join(rel)).unwrap());
        assert_eq!(want, got, "{rel} differs");
    }
    for leftover in [".version.ini.tmp", ".version.ini.discarded"] {
        assert!(
            !actual.join(GAME).join(leftover).exists(),
            "{leftover} left behind"
        );
    }
}

pub async fn wait_peers(daemon: &LabDaemon, count: u32) {
    crate::common::wait_peer_count(&mut daemon.client().await, count, CONNECT_TIMEOUT).await;
}

/// Asks for the file list from every connected peer that holds the game
/// (waiting for those still preparing it) and starts the download; returns
/// the list's summary.
pub async fn start_download(client: &mut IpcClient) -> GameFilesResult {
    let games = client.list_games().await.unwrap();
    let holders = games.iter().find(|g| g.id == id()).map_or(1, |g| g.peers);
    let summary = crate::common::get_game_from(client, &id(), holders).await;
    client.download(&id(), vec![]).await.unwrap();
    summary
}

/// Chunks of the file list fetched last, read page by page.
pub async fn chunk_count(client: &mut IpcClient) -> u64 {
    let files: Vec<GameFile> = client.game_files(&id()).await.unwrap();
    files
        .iter()
        .map(|f| f.size.div_ceil(lanspread_proto::wire::CHUNK_SIZE))
        .sum()
}

pub async fn wait_progress(events: &mut IpcClient, at_least: f64) {
    wait_for_event(events, DOWNLOAD_TIMEOUT, "progress", |e| {
        matches!(e, PeerEvent::DownloadGameFilesProgress { bytes_done, bytes_total, .. }
            if *bytes_done as f64 >= at_least * *bytes_total as f64)
    })
    .await;
}

/// The download's outcome event: finished or failed.
pub async fn wait_outcome(events: &mut IpcClient) -> PeerEvent {
    wait_for_event(events, DOWNLOAD_TIMEOUT, "the end of the download", |e| {
        matches!(
            e,
            PeerEvent::DownloadGameFilesFinished { .. } | PeerEvent::DownloadGameFilesFailed { .. }
        )
    })
    .await
    .event
}

/// How a download that finished went.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    /// Chunks fetched over the network.
    pub fetched: u64,
    /// Chunks the journal of an earlier run held.
    pub resumed: u64,
    /// Chunks found in place on disk (written by an earlier run, not yet
    /// journaled).
    pub reused: u64,
    pub millis: u64,
}

/// The outcome of a download that must finish.
pub async fn wait_finished(events: &mut IpcClient) -> Finished {
    match wait_outcome(events).await {
        PeerEvent::DownloadGameFilesFinished {
            chunks_fetched,
            chunks_resumed,
            chunks_reused,
            millis,
            ..
        } => Finished {
            fetched: chunks_fetched,
            resumed: chunks_resumed,
            reused: chunks_reused,
            millis,
        },
        other => panic!("download failed: {other:?}"),
    }
}

/// How a downloader is stopped mid-download.
#[derive(Clone, Copy, Debug)]
pub enum Interruption {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a clean stop, which must exit 0.
    Terminate,
}

/// What an interrupted-then-resumed download did.
pub struct Resumed {
    pub fetched: u64,
    pub resumed: u64,
    pub total: u64,
}

/// One seeder (h1, shaped to 100 Mbit/s) and one downloader (h2) of a
/// 20-chunk game: the downloader is stopped by `how` at 40 %, must not
/// claim the game, is restarted on the same work dir and downloads again.
/// Asserts that each chunk came exactly once (fetched, resumed, or found in
/// place on disk) and the copy is byte-identical; returns the counts for
/// the caller's own checks.
pub async fn interrupt_and_resume(how: Interruption) -> Resumed {
    use crate::lab_harness::Lab;
    let game = make_game(lanspread_proto::wire::CHUNK_SIZE * 20);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    lab.shape("h1", "100mbit");
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let mut client = leech.client().await;
    start_download(&mut client).await;
    let total = chunk_count(&mut client).await;
    wait_progress(&mut events, 0.4).await;
    drop(events);
    let work = match how {
        Interruption::Kill => {
            // Let the journal (written once a second) catch up, then crash.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            leech.kill_hard()
        }
        Interruption::Terminate => {
            let (status, work) = leech.terminate();
            assert!(status.success(), "exit after SIGTERM: {status}");
            work
        }
    };
    let sentinel = work.path().join("games").join(GAME).join("version.ini");
    assert!(
        !sentinel.exists(),
        "an interrupted download claims the game"
    );

    let leech = lab.spawn_in("h2", "leech", work, &[]);
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    let Finished {
        fetched,
        resumed,
        reused,
        ..
    } = wait_finished(&mut events).await;
    eprintln!(
        "measured: after {how:?}, {resumed} chunks resumed, {reused} found on disk, {fetched} fetched of {total}"
    );
    assert_eq!(fetched + resumed + reused, total, "each chunk exactly once");
    assert_identical(game.path(), &leech.games());
    Resumed {
        fetched,
        resumed,
        total,
    }
}
