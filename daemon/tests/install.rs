//! Install transactions through the daemon: install, update, uninstall,
//! failures that leave the old `local/` alone, a full disk, and the
//! automatic install after a download.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{ErrorCode, PeerCommand, PeerEvent};
use lanspread_proto::model::GameId;

const TIMEOUT_OP: Duration = Duration::from_secs(60);

fn id(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn zipped_game(dir: &Path, version: &str, exe: &[u8]) {
    let root = dir.join("openarena");
    write(&root.join("version.ini"), version.as_bytes());
    make_zip(
        &root.join("openarena.zip"),
        &[("bin/openarena", exe), ("baseoa/pak0.pk3", b"pak")],
    );
}

/// Sends `command` and waits for the finished or failed event of `id`.
async fn run_op(
    client: &mut IpcClient,
    events: &mut IpcClient,
    command: PeerCommand,
) -> Result<(), String> {
    client.request(command).await.map_err(|e| e.to_string())?;
    let event = wait_for_event(events, TIMEOUT_OP, "the end of the operation", |e| {
        matches!(
            e,
            PeerEvent::InstallGameFinished { .. }
                | PeerEvent::InstallGameFailed { .. }
                | PeerEvent::UninstallGameFinished { .. }
                | PeerEvent::UninstallGameFailed { .. }
        )
    })
    .await;
    match event.event {
        PeerEvent::InstallGameFailed { reason, .. }
        | PeerEvent::UninstallGameFailed { reason, .. } => Err(reason),
        _ => Ok(()),
    }
}

/// Whether the library (after its rescan) shows `game` installed.
async fn installed(client: &mut IpcClient, game: &str) -> bool {
    let games = client.list_games().await.unwrap();
    games
        .iter()
        .find(|g| g.id.as_str() == game)
        .is_some_and(|g| g.installed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_update_and_uninstall_through_the_daemon() {
    let daemon = TestDaemon::start(|d| zipped_game(d, "1", b"v1")).await;
    let root = daemon.game_dir.path().join("openarena");
    let mut client = daemon.client().await;
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();

    run_op(
        &mut client,
        &mut events,
        PeerCommand::InstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(root.join("local/bin/openarena")).unwrap(),
        b"v1"
    );
    assert_eq!(
        std::fs::read(root.join("local/baseoa/pak0.pk3")).unwrap(),
        b"pak"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(installed(&mut client, "openarena").await);

    // An update: new archive, install again.
    make_zip(&root.join("openarena.zip"), &[("bin/openarena", b"v2")]);
    run_op(
        &mut client,
        &mut events,
        PeerCommand::InstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(root.join("local/bin/openarena")).unwrap(),
        b"v2"
    );
    assert!(
        !root.join("local/baseoa").exists(),
        "the new local/ replaces the old one whole"
    );

    run_op(
        &mut client,
        &mut events,
        PeerCommand::UninstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap();
    assert!(!root.join("local").exists());
    assert!(root.join("openarena.zip").exists() && root.join("version.ini").exists());
    let mut leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers, ["openarena.zip", "version.ini"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let games = client.list_games().await.unwrap();
    assert!(
        games
            .iter()
            .any(|g| g.id.as_str() == "openarena" && g.downloaded && !g.installed)
    );
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_archive_fails_clearly_and_leaves_the_old_install() {
    let daemon = TestDaemon::start(|d| zipped_game(d, "1", b"v1")).await;
    let root = daemon.game_dir.path().join("openarena");
    let mut client = daemon.client().await;
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    run_op(
        &mut client,
        &mut events,
        PeerCommand::InstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/test_read_format_rar5_truncated_huff.rar"),
        root.join("broken.rar"),
    )
    .unwrap();
    let reason = run_op(
        &mut client,
        &mut events,
        PeerCommand::InstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap_err();
    assert!(reason.contains("broken.rar"), "{reason}");
    assert_eq!(
        std::fs::read(root.join("local/bin/openarena")).unwrap(),
        b"v1"
    );
    assert!(!root.join(".local.installing").exists() && !root.join(".lanspread.json").exists());

    // Operations on games that are not downloaded or not installed.
    let err = client.install(&id("quake3")).await.unwrap_err();
    assert_eq!(err.daemon_error().unwrap().code, ErrorCode::InvalidRequest);
    daemon.stop().await.0.unwrap();
}

/// A full disk during extraction: a small tmpfs as the game directory.
/// Needs root to mount it (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a tmpfs (`just test` runs it)"]
async fn a_full_disk_fails_the_update_and_keeps_the_old_install() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to mount a tmpfs (CI runs as root)"
    );
    let mount_point = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "lanspread-full-disk"])
        .arg(mount_point.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs failed");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mount_point.path());
    zipped_game(mount_point.path(), "1", b"v1");

    let daemon = TestDaemon::start(|_| {}).await;
    let mut client = daemon.client().await;
    client.set_game_dir(mount_point.path()).await.unwrap();
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    run_op(
        &mut client,
        &mut events,
        PeerCommand::InstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap();
    let root = mount_point.path().join("openarena");
    // The update expands to 8 MiB on a 2 MiB disk.
    make_zero_zip(&root.join("openarena.zip"), "bin/huge.bin", 8 << 20);
    let reason = run_op(
        &mut client,
        &mut events,
        PeerCommand::InstallGame {
            id: id("openarena"),
        },
    )
    .await
    .unwrap_err();
    assert!(reason.contains("no space left"), "{reason}");
    assert_eq!(
        std::fs::read(root.join("local/bin/openarena")).unwrap(),
        b"v1"
    );
    assert!(!root.join(".local.installing").exists());
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downloaded_game_installs_by_itself() {
    let lan = MemoryLan::default();
    let seeder = TestDaemon::start_on(&lan, |d| zipped_game(d, "3", b"auto")).await;
    let leech = TestDaemon::start_on(&lan, |_| {}).await;
    let mut client = leech.client().await;
    wait_peer_count(&mut client, 1, Duration::from_secs(15)).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    client.get_game(&id("openarena")).await.unwrap();
    client.download(&id("openarena"), vec![]).await.unwrap();
    let mut order = Vec::new();
    loop {
        let event = tokio::time::timeout(TIMEOUT_OP, events.next_event())
            .await
            .unwrap()
            .unwrap();
        match event.event {
            PeerEvent::DownloadGameFilesFinished { .. } => order.push("downloaded"),
            PeerEvent::InstallGameBegin { .. } => order.push("install begins"),
            PeerEvent::InstallGameFinished { .. } => {
                order.push("installed");
                break;
            }
            PeerEvent::InstallGameFailed { reason, .. } => panic!("auto install failed: {reason}"),
            PeerEvent::DownloadGameFilesFailed { reason, .. } => {
                panic!("download failed: {reason}")
            }
            _ => {}
        }
    }
    assert_eq!(order, ["downloaded", "install begins", "installed"]);
    let exe = leech.game_dir.path().join("openarena/local/bin/openarena");
    assert_eq!(std::fs::read(exe).unwrap(), b"auto");
    leech.stop().await.0.unwrap();
    seeder.stop().await.0.unwrap();
}

/// A script that acts on each outcome event at once must not race the
/// library rescan: the next command is judged by the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_may_follow_the_previous_ones_event_at_once() {
    let daemon = TestDaemon::start(|d| zipped_game(d, "1", b"v1")).await;
    let mut client = daemon.client().await;
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    for _ in 0..10 {
        for command in [
            PeerCommand::InstallGame {
                id: id("openarena"),
            },
            PeerCommand::UninstallGame {
                id: id("openarena"),
            },
        ] {
            run_op(&mut client, &mut events, command).await.unwrap();
        }
    }
    let uninstalled = daemon.game_dir.path().join("openarena/local");
    assert!(!uninstalled.exists());
    // Still refused when it is really not installed.
    let refused = client.uninstall(&id("openarena")).await.unwrap_err();
    assert!(refused.to_string().contains("not installed"), "{refused}");
}
