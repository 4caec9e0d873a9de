//! Lab test of a game of 150 000 small files (issue 20): two real daemons
//! on two lab hosts, real mDNS and QUIC, the whole path through
//! `GetGame` (waiting while the seeder prepares the file list) and
//! `DownloadGameFiles`, compared file by file. The files are 1 to 8 KiB
//! (about 0.7 GiB in all): the count is what this test is about.

mod common;
mod lab_harness;

use std::time::{Duration, Instant};

use common::many_files::{MANY_FILES, tree_hashes, write_many_files};
use common::wait_for_event;
use lab_harness::Lab;
use lab_harness::game::*;
use lanspread_proto::ipc::PeerEvent;

/// Writing, preparing, moving and comparing 150 000 files.
const MANY_FILES_TIMEOUT: Duration = Duration::from_secs(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_game_of_150_000_small_files_downloads_byte_identical() {
    let lab = Lab::up(2);
    let seeder = lab.spawn_daemon("h1", "seed", |games| {
        write_many_files(&games.join(GAME), MANY_FILES);
    });
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let started = Instant::now();
    let summary = start_download(&mut leech.client().await).await;
    // The files, version.ini, a folder per 500 files and `data`.
    assert_eq!(
        summary.files as usize,
        MANY_FILES + 1 + MANY_FILES / 500 + 1
    );
    let end = wait_for_event(&mut events, MANY_FILES_TIMEOUT, "the end", |e| {
        matches!(
            e,
            PeerEvent::DownloadGameFilesFinished { .. } | PeerEvent::DownloadGameFilesFailed { .. }
        )
    })
    .await
    .event;
    let PeerEvent::DownloadGameFilesFinished { chunks_fetched, .. } = end else {
        panic!("download failed: {end:?}");
    };
    eprintln!(
        "{MANY_FILES} files through the lab in {:?}",
        started.elapsed()
    );
    assert_eq!(chunks_fetched, MANY_FILES as u64 + 1);
    let want = tree_hashes(&seeder.games().join(GAME));
    let got = tree_hashes(&leech.games().join(GAME));
    assert_eq!(got.len(), MANY_FILES + 1, "files on disk");
    assert!(want == got, "the downloaded tree differs from the seeder's");
}
