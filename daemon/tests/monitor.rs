//! The local game monitor in-process: changes made by hand on disk reach
//! the library (and its subscribers) by themselves, rescans are debounced,
//! held during operations, and the monitor survives its directory being
//! deleted and recreated.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::model::{GameId, GameSummary};
use lanspreadd::install::{LibarchiveUnpacker, UnpackError, UnpackProgress, Unpacker};

/// The bound for a change on disk to reach `ListGames`.
const VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// Polls `ListGames` until `want` holds; returns how long it took.
async fn until(
    client: &mut IpcClient,
    what: &str,
    want: impl Fn(&[GameSummary]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let games = client.list_games().await.unwrap();
        if want(&games) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} never happened: {games:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn game<'a>(games: &'a [GameSummary], id: &str) -> Option<&'a GameSummary> {
    games.iter().find(|g| g.id.as_str() == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_by_hand_reach_the_library_within_two_seconds() {
    let daemon = TestDaemon::start(|d| write(&d.join("quake3/version.ini"), b"1.32")).await;
    let dir = daemon.game_dir.path().to_owned();
    let mut client = daemon.client().await;
    let mut timings = Vec::new();

    // A new root copied in, version.ini written last.
    write(&dir.join("openarena/pak0.eti"), &[1; 50_000]);
    write(&dir.join("openarena/maps/dm1.eti"), &[2; 1000]);
    write(&dir.join("openarena/version.ini"), b"0.8.8");
    timings.push(
        until(&mut client, "a new root", |g| {
            game(g, "openarena").is_some_and(|g| {
                g.downloaded && g.version.as_ref().is_some_and(|v| v.as_str() == "0.8.8")
            })
        })
        .await,
    );

    // version.ini bumped.
    write(&dir.join("openarena/version.ini"), b"0.9.0");
    timings.push(
        until(&mut client, "a version bump", |g| {
            game(g, "openarena")
                .is_some_and(|g| g.version.as_ref().is_some_and(|v| v.as_str() == "0.9.0"))
        })
        .await,
    );

    // local/ created, then removed, by hand.
    std::fs::create_dir(dir.join("openarena/local")).unwrap();
    timings.push(
        until(&mut client, "installed by hand", |g| {
            game(g, "openarena").is_some_and(|g| g.installed)
        })
        .await,
    );
    std::fs::remove_dir(dir.join("openarena/local")).unwrap();
    timings.push(
        until(&mut client, "uninstalled by hand", |g| {
            game(g, "openarena").is_some_and(|g| !g.installed)
        })
        .await,
    );

    // A root renamed: the old id goes, the new one comes.
    std::fs::rename(dir.join("quake3"), dir.join("teeworlds")).unwrap();
    timings.push(
        until(&mut client, "a rename", |g| {
            game(g, "quake3").is_none() && game(g, "teeworlds").is_some()
        })
        .await,
    );

    // A root deleted.
    std::fs::remove_dir_all(dir.join("openarena")).unwrap();
    timings.push(
        until(&mut client, "a deletion", |g| {
            game(g, "openarena").is_none()
        })
        .await,
    );

    timings.sort();
    eprintln!(
        "measured: change on disk -> ListGames: median {:?}, max {:?}",
        timings[timings.len() / 2],
        timings.last().unwrap()
    );
    for took in &timings {
        assert!(*took < VISIBLE_WITHIN, "took {took:?}");
    }
    daemon.stop().await.0.unwrap();
}

/// Files with non-ASCII names appear, are renamed and disappear at the
/// speed of any other change (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_file_names_are_monitored_like_any_other() {
    let daemon = TestDaemon::start(|d| write(&d.join("quake3/version.ini"), b"1.32")).await;
    let root = daemon.game_dir.path().join("quake3");
    let mut client = daemon.client().await;
    let size = |games: &[GameSummary]| game(games, "quake3").map(|g| g.size);
    let base = size(&client.list_games().await.unwrap()).unwrap();
    let added = root.join("マップ Überspiel 🎮.pk3");
    write(&added, &[5; 4321]);
    let took = until(&mut client, "a non-ASCII file added", |g| {
        size(g) == Some(base + 4321)
    })
    .await;
    assert!(took < VISIBLE_WITHIN, "took {took:?}");
    std::fs::rename(&added, root.join("地図.pk3")).unwrap();
    std::fs::write(root.join("地図.pk3"), [6; 100]).unwrap();
    let took = until(&mut client, "a non-ASCII file renamed and rewritten", |g| {
        size(g) == Some(base + 100)
    })
    .await;
    assert!(took < VISIBLE_WITHIN, "took {took:?}");
    std::fs::remove_file(root.join("地図.pk3")).unwrap();
    until(&mut client, "a non-ASCII file removed", |g| {
        size(g) == Some(base)
    })
    .await;
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_slow_write_gives_a_bounded_number_of_rescans_and_one_snapshot() {
    let daemon = TestDaemon::start(|d| write(&d.join("openarena/version.ini"), b"1")).await;
    let dir = daemon.game_dir.path().to_owned();
    let mut client = daemon.client().await;
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = client.status().await.unwrap().rescans;

    // 60 writes of 1 MiB, 50 ms apart: a slow copy of one big file.
    let path = dir.join("openarena/big.eti");
    let writer = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut file = std::fs::File::create(path).unwrap();
        for _ in 0..60 {
            file.write_all(&vec![7u8; 1 << 20]).unwrap();
            file.flush().unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    writer.await.unwrap();
    until(&mut client, "the big file", |g| {
        game(g, "openarena").is_some_and(|g| g.size == 60 * (1 << 20) + 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rescans = client.status().await.unwrap().rescans - before;
    eprintln!("measured: a 3 s write of 60 MiB caused {rescans} rescans");
    assert!(
        (1..=3).contains(&rescans),
        "{rescans} rescans for one slow write"
    );
    // Subscribers saw the library change a bounded number of times too.
    let mut snapshots = 0;
    while let Ok(Ok(event)) =
        tokio::time::timeout(Duration::from_millis(100), events.next_event()).await
    {
        if matches!(event.event, PeerEvent::LibrarySnapshot { .. }) {
            snapshots += 1;
        }
    }
    assert!(snapshots <= 4, "{snapshots} snapshots");
    daemon.stop().await.0.unwrap();
}

/// An unpacker that holds every extraction until the test opens the gate.
#[derive(Debug, Default)]
struct GatedUnpacker {
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl GatedUnpacker {
    fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
    }
}

impl Unpacker for GatedUnpacker {
    fn unpack(
        &self,
        volumes: &[PathBuf],
        target: &Path,
        progress: &mut dyn FnMut(UnpackProgress),
    ) -> Result<UnpackProgress, UnpackError> {
        let mut open = self.gate.0.lock().unwrap();
        while !*open {
            open = self.gate.1.wait(open).unwrap();
        }
        drop(open);
        LibarchiveUnpacker.unpack(volumes, target, progress)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rescan_of_a_game_runs_during_an_operation_on_it_and_one_runs_after() {
    let gated = Arc::new(GatedUnpacker::default());
    let unpacker = Arc::clone(&gated);
    let daemon = TestDaemon::start_with(
        &MemoryLan::default(),
        |d| {
            write(&d.join("openarena/version.ini"), b"1");
            make_zip(&d.join("openarena/game.zip"), &[("bin/game", b"x")]);
            write(&d.join("quake3/version.ini"), b"1");
        },
        move |config| config.unpacker = unpacker,
    )
    .await;
    let dir = daemon.game_dir.path().to_owned();
    let mut client = daemon.client().await;
    // Whatever happens, the gate opens at the end (a blocked extraction
    // would keep the test's runtime from shutting down).
    struct OpenOnDrop(Arc<GatedUnpacker>);
    impl Drop for OpenOnDrop {
        fn drop(&mut self) {
            self.0.open();
        }
    }
    let _open = OpenOnDrop(Arc::clone(&gated));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let id = GameId::new("openarena").unwrap();
    client.install(&id).await.unwrap();
    let before = client.status().await.unwrap().rescans;

    // Changes to the game under installation, and to another game.
    write(&dir.join("openarena/version.ini"), b"2");
    write(&dir.join("quake3/version.ini"), b"2");
    until(&mut client, "the other game's rescan", |g| {
        game(g, "quake3").is_some_and(|g| g.version.as_ref().is_some_and(|v| v.as_str() == "2"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let games = client.list_games().await.unwrap();
    assert_eq!(
        game(&games, "openarena")
            .unwrap()
            .version
            .as_ref()
            .unwrap()
            .as_str(),
        "1",
        "a rescan of the game under operation ran"
    );
    assert_eq!(
        client.status().await.unwrap().rescans - before,
        1,
        "only quake3 was rescanned"
    );

    gated.open();
    until(&mut client, "the held rescan after the operation", |g| {
        game(g, "openarena")
            .is_some_and(|g| g.installed && g.version.as_ref().is_some_and(|v| v.as_str() == "2"))
    })
    .await;
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_recovers_when_its_directory_is_deleted_and_recreated() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("games");
    std::fs::create_dir(&dir).unwrap();
    let daemon = TestDaemon::start(|_| {}).await;
    let mut client = daemon.client().await;
    client.set_game_dir(&dir).await.unwrap();
    write(&dir.join("openarena/version.ini"), b"1");
    until(&mut client, "the first root", |g| {
        game(g, "openarena").is_some()
    })
    .await;

    std::fs::remove_dir_all(&dir).unwrap();
    until(&mut client, "the deletion", |g| g.is_empty()).await;
    std::fs::create_dir(&dir).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&dir.join("quake3/version.ini"), b"1");
    let took = until(&mut client, "a root in the recreated directory", |g| {
        game(g, "quake3").is_some()
    })
    .await;
    eprintln!("measured: recreated directory picked up after {took:?}");
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_from_a_change_on_disk_to_the_event_median_of_ten() {
    let daemon = TestDaemon::start(|d| write(&d.join("openarena/version.ini"), b"0")).await;
    let dir = daemon.game_dir.path().to_owned();
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut samples = Vec::new();
    for round in 1..=10u32 {
        let version = round.to_string();
        let changed = Instant::now();
        write(&dir.join("openarena/version.ini"), version.as_bytes());
        wait_for_event(&mut events, Duration::from_secs(5), "the snapshot with the new version", |e| {
            matches!(e, PeerEvent::LibrarySnapshot { games }
                if game(games, "openarena").is_some_and(|g| g.version.as_ref().is_some_and(|v| v.as_str() == version)))
        })
        .await;
        samples.push(changed.elapsed());
    }
    samples.sort();
    eprintln!(
        "measured: change on disk -> LibrarySnapshot event, same host: median {:?} (min {:?}, max {:?})",
        samples[5], samples[0], samples[9]
    );
    assert!(samples[5] < VISIBLE_WITHIN);
    daemon.stop().await.0.unwrap();
}
