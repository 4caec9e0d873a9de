//! Faults in the lab (`docs/lab.md#how-the-tests-use-it`, the hardening
//! issue): a flapping link,
//! packet loss, a seeder whose disk fails, a disk filled mid-download on the downloader,
//! Avahi restarting mid-download, and SIGTERM during a download and during
//! an install. After each, the downloader holds the complete, verified game
//! or a state that startup recovery and a second attempt repair, and
//! nothing outside its game directory changed. (Rate limits run in every
//! shaped test: `lab_download.rs`, `bench/run.py`.)

mod common;
mod lab_harness;

use std::path::Path;
use std::time::Duration;

use common::{wait_for_event, write};
use lab_harness::game::*;
use lab_harness::{Lab, LabDaemon};
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::wire::CHUNK_SIZE;

/// Only the game's own folder appears in the downloader's game directory.
fn assert_only_the_game(games: &Path) {
    let names: Vec<String> = std::fs::read_dir(games)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec![GAME.to_owned()],
        "game directory holds {names:?}"
    );
}

async fn events_of(daemon: &LabDaemon) -> IpcClient {
    let mut events = daemon.client().await;
    events.subscribe().await.unwrap();
    events
}

async fn assert_healthy(daemon: &LabDaemon) {
    let status = daemon.client().await.status().await.unwrap();
    assert!(status.game_dir.is_some(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_flapping_link_during_a_download_still_gives_the_whole_game() {
    let game = make_game(CHUNK_SIZE * 16);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    lab.shape("h1", "100mbit");
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = events_of(&leech).await;
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.1).await;
    // The seeder's link goes down and up three times (1.5 s each: longer
    // than a chunk's round trip, shorter than the peer timeout).
    for _ in 0..3 {
        lab.cut("h1");
        tokio::time::sleep(Duration::from_millis(1500)).await;
        lab.restore("h1");
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    wait_finished(&mut events).await;
    assert_identical(game.path(), &leech.games());
    assert_only_the_game(&leech.games());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn packet_loss_on_the_downloader_slows_it_but_every_byte_is_right() {
    let game = make_game(CHUNK_SIZE * 8);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    // 5 % of the UDP datagrams reaching the downloader are dropped (after
    // discovery, so the test is about the transfer).
    lab.run("h2", &["nft", "add", "table", "inet", "lossy"]);
    lab.run(
        "h2",
        &[
            "nft",
            "add",
            "chain",
            "inet",
            "lossy",
            "input",
            "{ type filter hook input priority 0; }",
        ],
    );
    lab.run(
        "h2",
        &[
            "nft", "add", "rule", "inet", "lossy", "input", "meta", "l4proto", "udp", "numgen",
            "random", "mod", "100", "<", "5", "counter", "drop",
        ],
    );
    let mut events = events_of(&leech).await;
    start_download(&mut leech.client().await).await;
    let finished = wait_finished(&mut events).await;
    let (fetched, millis) = (finished.fetched, finished.millis);
    let rules = lab.run("h2", &["nft", "list", "table", "inet", "lossy"]);
    let dropped: u64 = rules
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no counter in {rules}"));
    eprintln!(
        "measured: 5 % packet loss: {fetched} chunks in {millis} ms, {dropped} datagrams dropped"
    );
    assert!(dropped > 0, "the loss rule dropped nothing: {rules}");
    assert_identical(game.path(), &leech.games());
    assert_only_the_game(&leech.games());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_seeder_whose_disk_fails_is_worked_around() {
    let game = make_game(CHUNK_SIZE * 12);
    let lab = Lab::up(3);
    let failing_work = tempfile::tempdir().unwrap();
    copy_game(game.path())(&failing_work.path().join("games"));
    // Every third block this seeder reads fails with EIO.
    let failing = lab.spawn_in(
        "h1",
        "failing-disk",
        failing_work,
        &[("LANSPREAD_TEST_READ_ERROR_EVERY", "3")],
    );
    let _good = lab.spawn_daemon("h2", "good-disk", copy_game(game.path()));
    let leech = lab.spawn_daemon("h3", "leech", |_| {});
    wait_peers(&leech, 2).await;
    let mut events = events_of(&leech).await;
    start_download(&mut leech.client().await).await;
    wait_finished(&mut events).await;
    assert_identical(game.path(), &leech.games());
    assert_only_the_game(&leech.games());
    assert!(
        failing
            .log_text()
            .contains("test fault: failing a disk read"),
        "the fault never fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_full_disk_fails_the_download_clearly_and_a_retry_with_room_finishes() {
    let game = make_game(CHUNK_SIZE * 16); // 64 MiB
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    lab.shape("h1", "200mbit");
    // The downloader's game directory is a 200 MiB tmpfs, mounted only in
    // its host (gone with the lab): room for the game and its install when
    // the download starts (the space check passes), filled by someone else
    // once it runs.
    let work = tempfile::tempdir().unwrap();
    let games = work.path().join("games");
    std::fs::create_dir_all(&games).unwrap();
    let games_arg = games.to_str().unwrap().to_owned();
    lab.run(
        "h2",
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=200m",
            "lsl-full",
            &games_arg,
        ],
    );
    let leech = lab.spawn_in("h2", "leech", work, &[]);
    wait_peers(&leech, 1).await;
    let mut events = events_of(&leech).await;
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.1).await;
    let filler = format!("{games_arg}/filler");
    lab.run("h2", &["fallocate", "-l", "170M", &filler]);
    let failed = wait_outcome(&mut events).await;
    let PeerEvent::DownloadGameFilesFailed { reason, .. } = failed else {
        panic!("a 64 MiB game fit in the 30 MiB left: {failed:?}");
    };
    assert!(reason.contains("No space left"), "unclear reason: {reason}");
    assert_healthy(&leech).await;
    lab.run("h2", &["rm", &filler]);
    // What the daemon sees (its mount namespace): no sentinel, nothing
    // outside the game's folder.
    let seen =
        Path::new(&format!("/proc/{}/root", leech.pid())).join(games.strip_prefix("/").unwrap());
    assert!(!seen.join(GAME).join("version.ini").exists());
    assert_only_the_game(&seen);

    // Room again: the same download finishes, reusing verified chunks.
    start_download(&mut leech.client().await).await;
    let finished = wait_finished(&mut events).await;
    eprintln!(
        "measured: after a full disk, {} chunks resumed, {} found on disk, {} fetched",
        finished.resumed, finished.reused, finished.fetched
    );
    assert_identical(game.path(), &seen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn avahi_restarting_mid_download_does_not_disturb_it() {
    let game = make_game(CHUNK_SIZE * 16);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    lab.shape("h1", "100mbit");
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = events_of(&leech).await;
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.2).await;
    lab.restart_avahi("h2");
    lab.restart_avahi("h1");
    wait_finished(&mut events).await;
    assert_identical(game.path(), &leech.games());
    // Discovery came back as well: the peer is still (or again) connected.
    wait_peers(&leech, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn sigterm_during_a_download_exits_cleanly_and_the_restart_resumes() {
    let run = interrupt_and_resume(Interruption::Terminate).await;
    assert!(run.resumed > 0, "nothing resumed after a clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn sigterm_during_an_install_leaves_a_state_that_recovery_completes() {
    const ENTRIES: u64 = 8;
    const ENTRY: u64 = 48 << 20;
    let source = tempfile::tempdir().unwrap();
    let root = source.path().join(GAME);
    std::fs::create_dir_all(&root).unwrap();
    // Several big entries, so extraction takes a while and reports progress.
    let zip = root.join("game.zip");
    let script = format!(
        "import zipfile, sys\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
         [z.writestr(f'data/part{{i}}.bin', bytes({ENTRY})) for i in range({ENTRIES})]\nz.close()\n"
    );
    let made = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&zip)
        .status()
        .unwrap();
    assert!(made.success());
    write(&root.join("version.ini"), b"version=1.0\n");

    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(source.path()));
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = events_of(&leech).await;
    start_download(&mut leech.client().await).await;
    wait_finished(&mut events).await;
    // The install starts by itself; stop the daemon while it extracts.
    wait_for_event(&mut events, DOWNLOAD_TIMEOUT, "install progress", |e| {
        matches!(
            e,
            PeerEvent::InstallGameProgress { .. } | PeerEvent::InstallGameFinished { .. }
        )
    })
    .await;
    drop(events);
    let (status, work) = leech.terminate();
    assert!(status.success(), "exit after SIGTERM: {status}");

    // Restart: recovery leaves either the finished install or none, never
    // a partial one; a second install (if needed) completes it.
    let leech = lab.spawn_in("h2", "leech", work, &[]);
    let root = leech.games().join(GAME);
    for leftover in [".local.installing", ".local.backup", ".lanspread.json"] {
        assert!(!root.join(leftover).exists(), "{leftover} after recovery");
    }
    let installed = leech
        .client()
        .await
        .list_games()
        .await
        .unwrap()
        .into_iter()
        .any(|g| g.id == id() && g.installed);
    eprintln!("measured: SIGTERM mid-install; after restart installed = {installed}");
    if !installed {
        assert!(!root.join("local").exists(), "a partial local/");
        let mut events = events_of(&leech).await;
        leech.client().await.install(&id()).await.unwrap();
        let end = wait_for_event(&mut events, DOWNLOAD_TIMEOUT, "the install's end", |e| {
            matches!(
                e,
                PeerEvent::InstallGameFinished { .. } | PeerEvent::InstallGameFailed { .. }
            )
        })
        .await;
        assert!(
            matches!(end.event, PeerEvent::InstallGameFinished { .. }),
            "{end:?}"
        );
    }
    for i in 0..ENTRIES {
        let part = root.join(format!("local/data/part{i}.bin"));
        let len = std::fs::metadata(&part).map(|m| m.len());
        assert_eq!(len.ok(), Some(ENTRY), "{}", part.display());
    }
    assert_only_the_game(&leech.games());
}
