//! The download pipeline in-process: real daemons on loopback (found
//! through the in-memory discovery), real QUIC, real files.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{ErrorCode, GameFilesResult, PeerEvent};
use lanspread_proto::model::GameId;
use lanspread_proto::wire::CHUNK_SIZE;

const TIMEOUT_DL: Duration = Duration::from_secs(60);

fn id(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn content(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 12) as u8)
        .collect()
}

/// A game with several files: one larger than many chunks, an empty one,
/// nested folders.
fn seed_game(dir: &Path, version: &str) {
    let root = dir.join("openarena");
    write(
        &root.join("version.ini"),
        format!("version={version}\n").as_bytes(),
    );
    write(&root.join("pak0.eti"), &content(CHUNK_SIZE * 5 + 777, 1));
    write(&root.join("maps/deep/dm1.eti"), &content(100_000, 2));
    write(&root.join("empty.txt"), b"");
    std::fs::create_dir_all(root.join("emptydir")).unwrap();
}

/// A downloader on `lan` once it sees `peers` peers: the daemon, a client,
/// and a client subscribed to its events.
async fn leech_on(lan: &MemoryLan, peers: u32) -> (TestDaemon, IpcClient, IpcClient) {
    let leech = TestDaemon::start_on(lan, |_| {}).await;
    let mut client = leech.client().await;
    connected(&mut client, peers).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    (leech, client, events)
}

/// Cancels the download of `game` and waits until it is cancelled.
async fn cancel(client: &mut IpcClient, events: &mut IpcClient, game: &str) {
    client.cancel_download(&id(game)).await.unwrap();
    wait_for_event(events, TIMEOUT_DL, "DownloadGameFilesCancelled", |e| {
        matches!(e, PeerEvent::DownloadGameFilesCancelled { .. })
    })
    .await;
}

fn assert_same_tree(a: &Path, b: &Path) {
    for rel in ["version.ini", "pak0.eti", "maps/deep/dm1.eti", "empty.txt"] {
        let (x, y) = (
            std::fs::read(a.join(rel)).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
        );
        assert!(x == y, "{rel} differs");
    }
    assert!(b.join("emptydir").is_dir());
}

async fn connected(client: &mut IpcClient, peers: u32) {
    wait_peer_count(client, peers, Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_downloads_from_two_seeders_byte_for_byte_with_the_sentinel_last() {
    let lan = MemoryLan::default();
    let seed_a = TestDaemon::start_on(&lan, |d| seed_game(d, "1.0")).await;
    let seed_b = TestDaemon::start_on(&lan, |d| seed_game(d, "1.0")).await;
    let (leech, mut client, mut events) = leech_on(&lan, 2).await;

    let files: GameFilesResult = get_game_from(&mut client, &id("openarena"), 2).await;
    assert_eq!(files.peers, 2);
    assert_eq!(files.version.as_str(), "1.0");
    client.download(&id("openarena"), vec![]).await.unwrap();
    let root = leech.game_dir.path().join("openarena");
    let mut saw = Vec::new();
    loop {
        let event = tokio::time::timeout(TIMEOUT_DL, events.next_event())
            .await
            .unwrap()
            .unwrap();
        match &event.event {
            PeerEvent::GotGameFiles { .. } => saw.push("got"),
            PeerEvent::DownloadGameFilesBegin { .. } => {
                saw.push("begin");
                assert!(
                    !root.join("version.ini").exists(),
                    "sentinel before the end"
                );
            }
            PeerEvent::DownloadGameFilesProgress {
                bytes_done,
                bytes_total,
                ..
            } => {
                assert!(bytes_done <= bytes_total);
                if *bytes_done < *bytes_total {
                    assert!(
                        !root.join("version.ini").exists(),
                        "sentinel before the end"
                    );
                }
                if saw.last() != Some(&"progress") {
                    saw.push("progress");
                }
            }
            PeerEvent::DownloadGameFilesFinished {
                chunks_resumed,
                chunks_fetched,
                ..
            } => {
                saw.push("finished");
                assert_eq!(*chunks_resumed, 0);
                assert_eq!(
                    *chunks_fetched,
                    6 + 1 + 1,
                    "pak0 has 6 chunks, dm1 1, version.ini 1"
                );
                break;
            }
            PeerEvent::DownloadGameFilesFailed { reason, .. } => {
                panic!("download failed: {reason}")
            }
            _ => {}
        }
    }
    assert_eq!(saw.first(), Some(&"got"));
    assert_eq!(saw.last(), Some(&"finished"));
    assert!(saw.iter().position(|s| *s == "begin") < saw.iter().position(|s| *s == "finished"));
    assert_same_tree(&seed_a.game_dir.path().join("openarena"), &root);
    assert!(!root.join(".version.ini.tmp").exists());
    // The library follows: downloaded at the new version, served to others.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let games = client.list_games().await.unwrap();
        if games
            .iter()
            .any(|g| g.id.as_str() == "openarena" && g.downloaded && g.peers == 2)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "library never showed the download: {games:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for daemon in [leech, seed_b, seed_a] {
        daemon.stop().await.0.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_replaces_the_sentinel_and_a_second_operation_is_refused() {
    let lan = MemoryLan::default();
    let seeder = TestDaemon::start_on(&lan, |d| seed_game(d, "2.0")).await;
    let leech = TestDaemon::start_on(&lan, |d| seed_game(d, "1.0")).await;
    let mut client = leech.client().await;
    connected(&mut client, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let files: GameFilesResult = client.fetch_latest(&id("openarena")).await.unwrap();
    assert_eq!(files.version.as_str(), "2.0");
    client.download(&id("openarena"), vec![]).await.unwrap();
    // While it runs, a second download of the same game is refused.
    let second = client.download(&id("openarena"), vec![]).await;
    if let Err(err) = second {
        assert_eq!(err.daemon_error().unwrap().code, ErrorCode::Busy);
    } // (or it already finished, which is fine too)
    wait_for_event(&mut events, TIMEOUT_DL, "DownloadGameFilesFinished", |e| {
        matches!(e, PeerEvent::DownloadGameFilesFinished { .. })
    })
    .await;
    let root = leech.game_dir.path().join("openarena");
    assert_eq!(
        std::fs::read(root.join("version.ini")).unwrap(),
        b"version=2.0\n"
    );
    assert!(!root.join(".version.ini.discarded").exists());
    assert_same_tree(&seeder.game_dir.path().join("openarena"), &root);
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

/// An update finds the chunks of the new version that are already in
/// place on disk (same file, same offset), verified by hash, and fetches
/// only the rest: a changed chunk in a big file, a changed small file, a
/// new file; a file that shrank keeps its first chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_fetches_only_the_chunks_that_changed() {
    let lan = MemoryLan::default();
    let v2_pak = {
        let mut pak = content(CHUNK_SIZE * 5 + 777, 1);
        let third = (CHUNK_SIZE * 2 + 10) as usize;
        pak[third..third + 4096].fill(0xab);
        pak
    };
    let seeder = TestDaemon::start_on(&lan, |d| {
        seed_game(d, "2.0");
        let root = d.join("openarena");
        write(&root.join("pak0.eti"), &v2_pak);
        write(&root.join("maps/deep/dm1.eti"), &content(100_000, 7));
        write(&root.join("new.eti"), &content(CHUNK_SIZE + 5, 8));
        write(&root.join("shrunk.eti"), &content(CHUNK_SIZE, 9));
    })
    .await;
    let leech = TestDaemon::start_on(&lan, |d| {
        seed_game(d, "1.0");
        write(
            &d.join("openarena/shrunk.eti"),
            &content(CHUNK_SIZE * 2 + 10, 9),
        );
    })
    .await;
    let mut client = leech.client().await;
    connected(&mut client, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let files: GameFilesResult = client.fetch_latest(&id("openarena")).await.unwrap();
    assert_eq!(files.version.as_str(), "2.0");
    client.download(&id("openarena"), vec![]).await.unwrap();
    let finished = wait_for_event(&mut events, TIMEOUT_DL, "DownloadGameFilesFinished", |e| {
        matches!(e, PeerEvent::DownloadGameFilesFinished { .. })
    })
    .await;
    let PeerEvent::DownloadGameFilesFinished {
        bytes_reused,
        chunks_fetched,
        bytes_from_seeders,
        ..
    } = finished.event
    else {
        unreachable!()
    };
    eprintln!(
        "measured: reused {bytes_reused} bytes, fetched {chunks_fetched} chunks ({bytes_from_seeders} bytes)"
    );
    // pak0: all but the signature block of its third chunk that changed
    // (found in place, then by the block scan); shrunk: its first chunk.
    let block = lanspread_proto::wire::SIGNATURE_BLOCK;
    assert_eq!(
        bytes_reused,
        CHUNK_SIZE * 4 + 777 + (CHUNK_SIZE - block) + CHUNK_SIZE
    );
    // dm1, new.eti's two chunks, version.ini; pak0's third chunk was
    // assembled with one block fetched.
    assert_eq!(chunks_fetched, 4);
    assert_eq!(
        bytes_from_seeders,
        block + 100_000 + CHUNK_SIZE + 5 + "version=2.0\n".len() as u64
    );
    let (ours, theirs) = (
        leech.game_dir.path().join("openarena"),
        seeder.game_dir.path().join("openarena"),
    );
    assert_same_tree(&theirs, &ours);
    for rel in ["new.eti", "shrunk.eti"] {
        assert!(
            std::fs::read(ours.join(rel)).unwrap() == std::fs::read(theirs.join(rel)).unwrap(),
            "{rel} differs"
        );
    }
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

/// Data that moved: an archive with 1 MiB + 7 bytes inserted at 37 %, a
/// file with 3 MiB overwritten, a file renamed. The update fetches little
/// more than the bytes that changed (rounded to signature blocks) and ends
/// byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_shifted_and_renamed_data_fetches_only_what_changed() {
    let lan = MemoryLan::default();
    let archive = content(CHUNK_SIZE * 6 + 1234, 11);
    let big = content(CHUNK_SIZE * 4, 12);
    let renamed = content(CHUNK_SIZE * 2 + 99, 13);
    let inserted = content((1 << 20) + 7, 14);
    let overwrite = content(3 << 20, 15);
    let at = archive.len() * 37 / 100;
    let v2_archive = [&archive[..at], &inserted[..], &archive[at..]].concat();
    let mut v2_big = big.clone();
    v2_big[5 << 20..8 << 20].copy_from_slice(&overwrite);
    let seeder = TestDaemon::start_on(&lan, |d| {
        seed_game(d, "2.0");
        let root = d.join("openarena");
        write(&root.join("archive.eti"), &v2_archive);
        write(&root.join("big.eti"), &v2_big);
        write(&root.join("maps/new_name.eti"), &renamed);
    })
    .await;
    let leech = TestDaemon::start_on(&lan, |d| {
        seed_game(d, "1.0");
        let root = d.join("openarena");
        write(&root.join("archive.eti"), &archive);
        write(&root.join("big.eti"), &big);
        write(&root.join("old_name.eti"), &renamed);
    })
    .await;
    let mut client = leech.client().await;
    connected(&mut client, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let _: GameFilesResult = client.fetch_latest(&id("openarena")).await.unwrap();
    client.download(&id("openarena"), vec![]).await.unwrap();
    let finished = wait_for_event(&mut events, TIMEOUT_DL, "DownloadGameFilesFinished", |e| {
        matches!(e, PeerEvent::DownloadGameFilesFinished { .. })
    })
    .await;
    let PeerEvent::DownloadGameFilesFinished {
        bytes,
        bytes_reused,
        bytes_from_seeders,
        ..
    } = finished.event
    else {
        unreachable!()
    };
    let changed = (inserted.len() + overwrite.len()) as u64;
    let sentinel = "version=2.0\n".len() as u64;
    eprintln!(
        "measured: {bytes} bytes, reused {bytes_reused}, fetched {bytes_from_seeders} for {changed} changed ({:.3}×)",
        (bytes_from_seeders - sentinel) as f64 / changed as f64
    );
    assert!(
        bytes_from_seeders <= changed * 11 / 10 + sentinel,
        "fetched {bytes_from_seeders} bytes for {changed} changed"
    );
    assert_eq!(
        bytes_reused + bytes_from_seeders,
        bytes,
        "every byte accounted"
    );
    let (ours, theirs) = (
        leech.game_dir.path().join("openarena"),
        seeder.game_dir.path().join("openarena"),
    );
    for rel in ["archive.eti", "big.eti", "maps/new_name.eti"] {
        assert!(
            std::fs::read(ours.join(rel)).unwrap() == std::fs::read(theirs.join(rel)).unwrap(),
            "{rel} differs"
        );
    }
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

/// The chunk lanes of a connection close when idle (only the request lane
/// is kept alive): a second download after that idle time reconnects them
/// and completes, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_after_the_chunk_lanes_went_idle_reconnects_them() {
    let lan = MemoryLan::default();
    let seeder = TestDaemon::start_on(&lan, |d| {
        seed_game(d, "1.0");
        let other = d.join("teeworlds");
        write(&other.join("version.ini"), b"version=0.7\n");
        write(&other.join("data.eti"), &content(CHUNK_SIZE * 3 + 5, 4));
    })
    .await;
    let (leech, mut client, mut events) = leech_on(&lan, 1).await;
    for (game, wait) in [
        ("openarena", Duration::ZERO),
        (
            "teeworlds",
            lanspreadd::transport::IDLE_TIMEOUT + Duration::from_secs(2),
        ),
    ] {
        tokio::time::sleep(wait).await;
        let _: GameFilesResult = client.get_game(&id(game)).await.unwrap();
        client.download(&id(game), vec![]).await.unwrap();
        let end = wait_for_event(&mut events, TIMEOUT_DL, "the download's end", |e| {
            matches!(
                e,
                PeerEvent::DownloadGameFilesFinished { .. }
                    | PeerEvent::DownloadGameFilesFailed { .. }
            )
        })
        .await;
        assert!(
            matches!(end.event, PeerEvent::DownloadGameFilesFinished { .. }),
            "{game}: {:?}",
            end.event
        );
    }
    assert_same_tree(
        &seeder.game_dir.path().join("openarena"),
        &leech.game_dir.path().join("openarena"),
    );
    assert_eq!(
        std::fs::read(leech.game_dir.path().join("teeworlds/data.eti")).unwrap(),
        content(CHUNK_SIZE * 3 + 5, 4)
    );
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_download_leaves_no_sentinel_and_a_new_one_succeeds() {
    let lan = MemoryLan::default();
    let seeder = TestDaemon::start_on(&lan, |d| {
        seed_game(d, "1.0");
        // Big enough to still be running when the cancel arrives.
        write(&d.join("openarena/huge.eti"), &content(CHUNK_SIZE * 60, 9));
    })
    .await;
    let (leech, mut client, mut events) = leech_on(&lan, 1).await;
    let _: GameFilesResult = client.get_game(&id("openarena")).await.unwrap();
    client.download(&id("openarena"), vec![]).await.unwrap();
    wait_for_event(&mut events, TIMEOUT_DL, "DownloadGameFilesBegin", |e| {
        matches!(e, PeerEvent::DownloadGameFilesBegin { .. })
    })
    .await;
    cancel(&mut client, &mut events, "openarena").await;
    let root = leech.game_dir.path().join("openarena");
    for name in ["version.ini", ".version.ini.tmp", ".version.ini.discarded"] {
        assert!(!root.join(name).exists(), "{name} left behind");
    }
    let err = client.cancel_download(&id("openarena")).await.unwrap_err();
    assert_eq!(err.daemon_error().unwrap().code, ErrorCode::NotRunning);

    client.download(&id("openarena"), vec![]).await.unwrap();
    let finished = wait_for_event(&mut events, TIMEOUT_DL, "DownloadGameFilesFinished", |e| {
        matches!(e, PeerEvent::DownloadGameFilesFinished { .. })
    })
    .await;
    let PeerEvent::DownloadGameFilesFinished { chunks_resumed, .. } = finished.event else {
        unreachable!()
    };
    eprintln!("resumed {chunks_resumed} chunks after the cancel");
    assert_same_tree(&seeder.game_dir.path().join("openarena"), &root);
    assert_eq!(
        std::fs::read(root.join("huge.eti")).unwrap(),
        content(CHUNK_SIZE * 60, 9)
    );
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_a_game_nobody_holds_is_a_clear_error() {
    let lan = MemoryLan::default();
    let seeder = TestDaemon::start_on(&lan, |d| seed_game(d, "1.0")).await;
    let leech = TestDaemon::start_on(&lan, |_| {}).await;
    let mut client = leech.client().await;
    connected(&mut client, 1).await;
    let err = client.get_game(&id("quake3")).await.unwrap_err();
    assert_eq!(err.daemon_error().unwrap().code, ErrorCode::NoPeers);
    let err = client.download(&id("quake3"), vec![]).await.unwrap_err();
    assert_eq!(err.daemon_error().unwrap().code, ErrorCode::NotRunning);
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

/// A game of 10,000 small files (more than one IPC line could list, with
/// chunk hashes, before file lists were paged): `GetGame` answers with a
/// summary, `ListGameFiles` pages add up to it, every line the daemon
/// writes fits the limit (the client refuses longer ones), the download
/// is byte-identical, and its automatic install ends as "nothing to
/// install" (the game holds no archive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_of_ten_thousand_files_is_listed_in_pages_and_downloads() {
    const FILES: usize = 10_000;
    let file = |i: usize| {
        (
            format!("data/dir{:03}/asset-{i:05}.dat", i % 100),
            content(200 + (i as u64 % 1800), i as u8),
        )
    };
    let lan = MemoryLan::default();
    let seed = TestDaemon::start_on(&lan, |d| {
        let root = d.join("openarena");
        write(&root.join("version.ini"), b"version=2.0\n");
        for i in 0..FILES {
            let (path, bytes) = file(i);
            write(&root.join(path), &bytes);
        }
    })
    .await;
    let (leech, mut client, mut events) = leech_on(&lan, 1).await;

    let summary = client.get_game(&id("openarena")).await.unwrap();
    // 10,000 files, version.ini, 100 folders and `data`.
    assert_eq!(summary.files as usize, FILES + 1 + 100 + 1);
    let mut pages = 0;
    let mut listed = Vec::new();
    let mut offset = Some(0);
    while let Some(at) = offset {
        let page = client.list_game_files(&id("openarena"), at).await.unwrap();
        assert_eq!(page.offset, at);
        listed.extend(page.files);
        offset = page.next;
        pages += 1;
    }
    assert_eq!(listed.len(), summary.files as usize);
    assert!(pages >= 2, "{pages} page(s) for {} entries", listed.len());
    assert_eq!(
        listed.iter().map(|f| f.size).sum::<u64>(),
        summary.bytes,
        "the pages add up to the summary"
    );
    client.download(&id("openarena"), vec![]).await.unwrap();
    let finished = wait_for_event(&mut events, TIMEOUT_DL * 3, "the download's end", |e| {
        matches!(
            e,
            PeerEvent::DownloadGameFilesFinished { .. } | PeerEvent::DownloadGameFilesFailed { .. }
        )
    })
    .await;
    assert!(
        matches!(finished.event, PeerEvent::DownloadGameFilesFinished { .. }),
        "{finished:?}"
    );
    let skipped = wait_for_event(&mut events, TIMEOUT_DL, "the install step's end", |e| {
        matches!(
            e,
            PeerEvent::InstallGameSkipped { .. }
                | PeerEvent::InstallGameFinished { .. }
                | PeerEvent::InstallGameFailed { .. }
        )
    })
    .await;
    let PeerEvent::InstallGameSkipped { reason, .. } = &skipped.event else {
        panic!("the install after a download without archives: {skipped:?}");
    };
    assert!(reason.contains("nothing to install"), "{reason}");
    let root = leech.game_dir.path().join("openarena");
    for i in 0..FILES {
        let (path, bytes) = file(i);
        assert!(
            std::fs::read(root.join(&path)).unwrap() == bytes,
            "{path} differs"
        );
    }
    assert!(!root.join("local").exists(), "nothing was installed");
    drop(seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_gone_since_the_journal_counted_its_chunks_is_fetched_again() {
    let lan = MemoryLan::default();
    let seeder = TestDaemon::start_on(&lan, |d| {
        write(&d.join("openarena/version.ini"), b"version=1.0\n");
        write(&d.join("openarena/huge.eti"), &content(CHUNK_SIZE * 12, 5));
    })
    .await;
    let (leech, mut client, mut events) = leech_on(&lan, 1).await;
    // Slow enough that the journal counts some chunks before the cancel.
    client.set_limits(None, Some(8 << 20)).await.unwrap();
    let _: GameFilesResult = client.get_game(&id("openarena")).await.unwrap();
    client.download(&id("openarena"), vec![]).await.unwrap();
    wait_for_event(&mut events, TIMEOUT_DL, "three chunks done", |e| {
        matches!(e, PeerEvent::DownloadGameFilesProgress { bytes_done, .. }
            if *bytes_done >= 3 * CHUNK_SIZE)
    })
    .await;
    // A journal save (at most once a second) after those chunks.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cancel(&mut client, &mut events, "openarena").await;
    // The file goes away (a user, a crash before it was durable); the
    // journal still counts its chunks.
    let root = leech.game_dir.path().join("openarena");
    std::fs::remove_file(root.join("huge.eti")).unwrap();
    client.set_limits(None, Some(0)).await.unwrap();
    client.download(&id("openarena"), vec![]).await.unwrap();
    let end = wait_for_event(&mut events, TIMEOUT_DL, "the download's end", |e| {
        matches!(
            e,
            PeerEvent::DownloadGameFilesFinished { .. } | PeerEvent::DownloadGameFilesFailed { .. }
        )
    })
    .await;
    let PeerEvent::DownloadGameFilesFinished { chunks_resumed, .. } = end.event else {
        panic!("the second download failed: {:?}", end.event)
    };
    assert_eq!(chunks_resumed, 0, "chunks of a vanished file counted");
    assert_eq!(
        std::fs::read(root.join("huge.eti")).unwrap(),
        content(CHUNK_SIZE * 12, 5)
    );
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}
