//! Soak (the hardening issue): 300 download → install → uninstall cycles
//! across three lab hosts, in turn, within a bounded time. The open file
//! descriptors, threads and RSS of every daemon are sampled after a warm-up
//! of 200 cycles and at the end: they must not grow. The warm-up is long
//! because RSS climbs over the first 100-200 cycles and then levels off (most
//! likely the allocator's per-thread arenas filling, since serving runs on
//! a runtime of its own; not profiled). Measured: cycle 10 → 100 about
//! +50 MiB on a seeder, 100 → 200 +4 to +28 MiB, 200 → 300 +0.1 to +3 MiB
//! (two runs); a leak keeps growing. A daemon may reach that level late
//! (one went 64 → 108 MiB between cycles 200 and 300, to where the other
//! two had been since cycle 100), so RSS is held to the largest of the
//! three after the warm-up, not to its own.
//! `LANSPREAD_SOAK_CYCLES=N` runs a longer soak (the limit grows with it).

mod common;
mod lab_harness;

use std::time::{Duration, Instant};

use common::wait_for_event;
use lab_harness::game::*;
use lab_harness::{Lab, LabDaemon};
use lanspread_proto::ipc::PeerEvent;

const CYCLES: usize = 300;
const WARM_UP: usize = 200;
/// Per 100 cycles (about one minute on the 2-core CI machine).
const LIMIT_PER_100: Duration = Duration::from_secs(600);
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy)]
struct Usage {
    fds: usize,
    threads: usize,
    rss_kib: u64,
}

fn usage(pid: u32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    Usage {
        fds,
        threads: field("Threads:") as usize,
        rss_kib: field("VmRSS:"),
    }
}

/// A small installable game: a zip of incompressible data and a version.
fn zip_game() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join(GAME);
    std::fs::create_dir_all(&root).unwrap();
    let mut data = vec![0u8; 3 << 20];
    blake3::Hasher::new()
        .update(b"soak")
        .finalize_xof()
        .fill(&mut data);
    let blob = root.join("blob.bin");
    std::fs::write(&blob, &data).unwrap();
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import zipfile, sys\nwith zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED) as z:\n    z.write(sys.argv[2], 'data/blob.bin')\n    z.writestr('readme.txt', 'soak')\n",
        )
        .arg(root.join("game.zip"))
        .arg(&blob)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::remove_file(blob).unwrap();
    common::write(&root.join("version.ini"), b"version=1.0\n");
    dir
}

/// (downloaded here, peers holding the latest version)
async fn state(daemon: &LabDaemon) -> (bool, u32) {
    let games = daemon.client().await.list_games().await.unwrap();
    games
        .iter()
        .find(|g| g.id == id())
        .map_or((false, 0), |g| (g.downloaded, g.peers))
}

/// One cycle on `daemon`: forget the game, download it from the other two,
/// let it install itself, uninstall it.
async fn cycle(daemon: &LabDaemon) {
    std::fs::remove_dir_all(daemon.games().join(GAME)).unwrap();
    // Wait until the deletion is noticed and both other hosts are known
    // to hold the game again (the previous cycle re-downloaded it on one).
    let deadline = Instant::now() + STEP_TIMEOUT;
    while state(daemon).await != (false, 2) {
        assert!(
            Instant::now() < deadline,
            "stuck at {:?}",
            state(daemon).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    let mut client = daemon.client().await;
    let files = common::get_game_from(&mut client, &id(), 2).await;
    assert_eq!(files.peers, 2, "both other hosts serve the game");
    client.download(&id(), vec![]).await.unwrap();
    let installed = wait_for_event(&mut events, STEP_TIMEOUT, "the install's end", |e| {
        matches!(
            e,
            PeerEvent::InstallGameFinished { .. }
                | PeerEvent::InstallGameFailed { .. }
                | PeerEvent::DownloadGameFilesFailed { .. }
        )
    })
    .await;
    assert!(
        matches!(installed.event, PeerEvent::InstallGameFinished { .. }),
        "{installed:?}"
    );
    let local = daemon.games().join(GAME).join("local");
    assert_eq!(
        std::fs::metadata(local.join("data/blob.bin"))
            .unwrap()
            .len(),
        3 << 20
    );
    client.uninstall(&id()).await.unwrap();
    let uninstalled = wait_for_event(&mut events, STEP_TIMEOUT, "the uninstall's end", |e| {
        matches!(
            e,
            PeerEvent::UninstallGameFinished { .. } | PeerEvent::UninstallGameFailed { .. }
        )
    })
    .await;
    assert!(
        matches!(uninstalled.event, PeerEvent::UninstallGameFinished { .. }),
        "{uninstalled:?}"
    );
    assert!(!local.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn download_install_uninstall_cycles_leak_nothing() {
    let game = zip_game();
    let lab = Lab::up(3);
    let daemons: Vec<LabDaemon> = ["h1", "h2", "h3"]
        .iter()
        .map(|host| lab.spawn_daemon(host, host, copy_game(game.path())))
        .collect();
    for daemon in &daemons {
        wait_peers(daemon, 2).await;
    }
    let cycles: usize = std::env::var("LANSPREAD_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CYCLES)
        .max(WARM_UP);
    let limit = LIMIT_PER_100 * (cycles.div_ceil(100) as u32);
    let started = Instant::now();
    let mut warm = Vec::new();
    tokio::time::timeout(limit, async {
        for i in 0..cycles {
            cycle(&daemons[i % daemons.len()]).await;
            if i + 1 == WARM_UP {
                warm = daemons.iter().map(|d| usage(d.pid())).collect();
            }
            if (i + 1) % 100 == 0 {
                let now: Vec<Usage> = daemons.iter().map(|d| usage(d.pid())).collect();
                eprintln!("after {} cycles: {now:?}", i + 1);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{cycles} cycles took over {limit:?}"));
    // Let idle blocking threads and closed connections settle as they
    // did after the warm-up (tokio ends idle blocking threads after 10 s).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end: Vec<Usage> = daemons.iter().map(|d| usage(d.pid())).collect();
    eprintln!(
        "measured: {cycles} cycles in {:.0?}; after {WARM_UP}: {warm:?}; at the end: {end:?}",
        started.elapsed()
    );
    // Memory: the three daemons do the same work in turn, and each reaches
    // the allocator's plateau at its own time (seen: one at 64 MiB after
    // 200 cycles rose to the 118 MiB the other two had held since cycle
    // 100). A leak grows past the plateau, so each daemon's end is
    // compared with the largest of the three after the warm-up.
    let plateau = warm.iter().map(|u| u.rss_kib).max().unwrap_or(0);
    for (host, (before, after)) in warm.iter().zip(&end).enumerate() {
        assert!(
            after.fds <= before.fds + 4,
            "h{}: fds {} -> {}",
            host + 1,
            before.fds,
            after.fds
        );
        assert!(
            after.threads <= before.threads + 8,
            "h{}: threads {} -> {}",
            host + 1,
            before.threads,
            after.threads
        );
        assert!(
            after.rss_kib <= plateau + plateau / 4 + 16 * 1024,
            "h{}: RSS {} KiB -> {} KiB (the largest after the warm-up: {plateau} KiB)",
            host + 1,
            before.rss_kib,
            after.rss_kib
        );
    }
}
