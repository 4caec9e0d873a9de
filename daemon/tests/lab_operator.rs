//! Lab tests of the operator controls (issue 17): what a seeder under an
//! upload limit puts on the wire, measured from the bridge-side veth
//! counters (independent of the daemon's own accounting), a limit changed
//! mid-transfer, a limited seeder next to an unlimited one, and a download
//! refused for lack of space before it writes anything.

mod common;
mod lab_harness;

use std::time::{Duration, Instant};

use lab_harness::game::*;
use lab_harness::{Lab, LabDaemon};
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::wire::CHUNK_SIZE;

/// Mbit/s from bytes over a duration.
fn mbit(bytes: u64, over: Duration) -> f64 {
    bytes as f64 * 8.0 / 1e6 / over.as_secs_f64()
}

fn ctl_ok(daemon: &LabDaemon, args: &[&str]) -> String {
    let output = daemon.ctl(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "lanspreadctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_seeder_limited_to_100_mbit_sends_at_most_105_on_an_unshaped_link() {
    let game = make_game(CHUNK_SIZE * 24);
    let lab = Lab::up(2);
    let seed_work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed_work.path().join("games")).unwrap();
    copy_game(game.path())(&seed_work.path().join("games"));
    let seed = lab.spawn_in(
        "h1",
        "seed",
        seed_work,
        &[("LANSPREAD_UPLOAD_LIMIT", "100Mbit")],
    );
    assert!(ctl_ok(&seed, &["status"]).contains("upload      11.9 MiB/s (100.0 Mbit/s)"));
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let sent_at_start = lab.sent_bytes("h1");
    start_download(&mut leech.client().await).await;
    // Past the first chunks (connection set-up, the saved-up burst).
    wait_progress(&mut events, 0.1).await;
    let done_before = progress_bytes(&mut events).await;
    let (start, sent_before) = (Instant::now(), lab.sent_bytes("h1"));
    let done_after = finished_bytes(&mut events).await;
    let (elapsed, sent) = (start.elapsed(), lab.sent_bytes("h1") - sent_before);
    let overhead = (lab.sent_bytes("h1") - sent_at_start) as f64 / done_after as f64;
    eprintln!("measured: wire bytes per file byte over the whole download {overhead:.3}");
    assert_identical(game.path(), &leech.games());
    let rate = mbit(sent, elapsed);
    let payload = mbit(done_after - done_before, elapsed);
    eprintln!(
        "measured: seeder limited to 100 Mbit/s sent {rate:.1} Mbit/s on the wire ({sent} bytes in {elapsed:.2?}); the download got {payload:.1} Mbit/s of file data"
    );
    assert!(rate <= 105.0, "{rate:.1} Mbit/s over a 100 Mbit/s limit");
    // The limit is a ceiling, not a brake: the link is far faster.
    assert!(
        rate >= 80.0,
        "only {rate:.1} Mbit/s under a 100 Mbit/s limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_limit_changed_mid_transfer_holds_within_a_second() {
    let game = make_game(CHUNK_SIZE * 24);
    let lab = Lab::up(2);
    let seed_work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(seed_work.path().join("games")).unwrap();
    copy_game(game.path())(&seed_work.path().join("games"));
    let seed = lab.spawn_in(
        "h1",
        "seed",
        seed_work,
        &[("LANSPREAD_UPLOAD_LIMIT", "200Mbit")],
    );
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.1).await;
    let (before_start, before_sent) = (Instant::now(), lab.sent_bytes("h1"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mbit(lab.sent_bytes("h1") - before_sent, before_start.elapsed());

    ctl_ok(&seed, &["limits", "--upload", "40Mbit"]);
    // Within a second the new limit holds: measure the two seconds after.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (after_start, after_sent) = (Instant::now(), lab.sent_bytes("h1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = mbit(lab.sent_bytes("h1") - after_sent, after_start.elapsed());
    let shown = ctl_ok(&seed, &["--json", "limits"]);
    // Lifted again, the rest goes at full speed and the bytes are right.
    ctl_ok(&seed, &["limits", "--upload", "0"]);
    wait_finished(&mut events).await;
    assert_identical(game.path(), &leech.games());
    eprintln!(
        "measured: {before:.1} Mbit/s under a 200 Mbit/s limit, {after:.1} Mbit/s from 1 s after it became 40 Mbit/s"
    );
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["upload"], 5_000_000, "{shown}");
    assert!(
        before > 100.0,
        "the first limit must be visible: {before:.1}"
    );
    assert!(after <= 42.0, "{after:.1} Mbit/s after the change to 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_limited_seeder_and_an_unlimited_one_add_up() {
    let game = make_game(CHUNK_SIZE * 32);
    let lab = Lab::up(3);
    let limited_work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(limited_work.path().join("games")).unwrap();
    copy_game(game.path())(&limited_work.path().join("games"));
    let _limited = lab.spawn_in(
        "h1",
        "limited",
        limited_work,
        &[("LANSPREAD_UPLOAD_LIMIT", "100Mbit")],
    );
    // The other seeder has no limit of ours; its link is shaped so that
    // the sum is a rate two shared cores can carry.
    let _other = lab.spawn_daemon("h2", "other", copy_game(game.path()));
    lab.shape("h2", "200mbit");
    let leech = lab.spawn_daemon("h3", "leech", |_| {});
    wait_peers(&leech, 2).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.1).await;
    let done_before = progress_bytes(&mut events).await;
    let start = Instant::now();
    let (limited_before, other_before) = (lab.sent_bytes("h1"), lab.sent_bytes("h2"));
    let done_after = finished_bytes(&mut events).await;
    let bytes_total = done_after;
    let elapsed = start.elapsed();
    let limited = mbit(lab.sent_bytes("h1") - limited_before, elapsed);
    let other = mbit(lab.sent_bytes("h2") - other_before, elapsed);
    let achieved = mbit(done_after - done_before, elapsed);
    assert_identical(game.path(), &leech.games());
    eprintln!(
        "measured: limited seeder {limited:.1} Mbit/s, other {other:.1} Mbit/s (wire); download {achieved:.1} Mbit/s of payload = {:.2} x (100 + other) ({bytes_total} bytes)",
        achieved / (100.0 + other)
    );
    assert!(limited <= 105.0, "limited seeder sent {limited:.1} Mbit/s");
    assert!(
        achieved >= 0.9 * (100.0 + other),
        "download {achieved:.1} Mbit/s < 0.9 x (100 + {other:.1})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_download_into_a_too_small_directory_is_refused_before_anything_is_written() {
    // 24 MiB to write and (pak0.eti is an archive) about 24 MiB more for
    // the install, into a 32 MiB tmpfs.
    let game = make_game(CHUNK_SIZE * 6);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
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
            "size=32m",
            "lanspread-test",
            &games_arg,
        ],
    );
    let leech = lab.spawn_in("h2", "leech", work, &[]);
    wait_peers(&leech, 1).await;
    let mut client = leech.client().await;
    client.get_game(&id()).await.unwrap();
    let err = client.download(&id(), vec![]).await.unwrap_err();
    let refusal = err.daemon_error().expect("the daemon refuses");
    assert_eq!(
        refusal.code,
        lanspread_proto::ipc::ErrorCode::NoSpace,
        "{refusal}"
    );
    eprintln!("refusal: {}", refusal.message);
    for figure in [
        "needs",
        "to write",
        "already on disk",
        "for the install",
        "free",
    ] {
        assert!(
            refusal.message.contains(figure),
            "{figure}: {}",
            refusal.message
        );
    }
    // Nothing was written: the tmpfs, seen from inside the host, is empty.
    let listed = lab.run("h2", &["find", &games_arg, "-mindepth", "1"]);
    assert_eq!(listed.trim(), "", "written before the refusal");
    // The game is not held: the same request is answered again the same way.
    let again = client.download(&id(), vec![]).await.unwrap_err();
    assert_eq!(
        again.daemon_error().unwrap().code,
        lanspread_proto::ipc::ErrorCode::NoSpace
    );
    // A subset that fits (version.ini and the small files) downloads.
    client.get_game(&id()).await.unwrap();
    let files = client.game_files(&id()).await.unwrap();
    let small: Vec<String> = files
        .into_iter()
        .filter(|f| !f.is_dir && f.relative_path != "pak0.eti")
        .map(|f| f.relative_path)
        .collect();
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    client.download(&id(), small).await.unwrap();
    wait_finished(&mut events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn verify_finds_a_flipped_byte_and_repair_fetches_just_that_chunk() {
    let game = make_game(CHUNK_SIZE * 6 + 4321);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    // The leech holds the same game, one byte of chunk 3 of pak0.eti
    // flipped (as a failing disk would: size and mtime stay).
    let leech = lab.spawn_daemon("h2", "leech", |games| {
        copy_game(game.path())(games);
        let pak = games.join(GAME).join("pak0.eti");
        let mtime = std::fs::metadata(&pak).unwrap().modified().unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&pak).unwrap();
        let offset = CHUNK_SIZE * 3 + 17;
        let mut byte = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(
            &std::fs::File::open(&pak).unwrap(),
            &mut byte,
            offset,
        )
        .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x01], offset).unwrap();
        file.set_modified(mtime).unwrap();
    });
    wait_peers(&leech, 1).await;

    let found = leech.ctl(&["--json", "verify", GAME]);
    assert_eq!(
        found.status.code(),
        Some(1),
        "a difference is a failure: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    let differing = &report["event"]["differing"];
    assert_eq!(
        differing,
        &serde_json::json!([{"relative_path": "pak0.eti", "problem": "content", "bad_chunks": [3], "repaired": false}]),
        "{report}"
    );
    assert_eq!(report["event"]["repaired_chunks"], 0);

    let repaired = leech.ctl(&["--json", "verify", GAME, "--repair"]);
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&repaired.stdout).unwrap();
    assert_eq!(
        report["event"]["repaired_chunks"], 1,
        "exactly one chunk fetched: {report}"
    );
    assert_eq!(
        report["event"]["differing"][0]["repaired"], true,
        "{report}"
    );

    let clean = leech.ctl(&["verify", GAME]);
    let stdout = String::from_utf8_lossy(&clean.stdout);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&clean.stderr)
    );
    assert!(stdout.contains("clean"), "{stdout}");
    assert_identical(game.path(), &leech.games());
}

/// A tmux session, killed (by name) on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", &self.0]).stdout)
            .into_owned()
    }

    fn alive(&self) -> bool {
        self.run(&["has-session", "-t", &self.0]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.run(&["kill-session", "-t", &self.0]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn top_in_tmux_shows_the_download_its_rate_and_sources_and_quits_on_q() {
    let game = make_game(CHUNK_SIZE * 24);
    let lab = Lab::up(2);
    let seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    lab.shape("h1", "50mbit");
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let work = tempfile::tempdir().unwrap();
    let exit_file = work.path().join("exit");
    let tmux = Tmux(format!("lanspread-top-{}", std::process::id()));
    let command = format!(
        "{} --socket {} top; echo $? > {}",
        common::lanspreadctl().display(),
        leech.socket.display(),
        exit_file.display()
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        &tmux.0,
        "-x",
        "150",
        "-y",
        "40",
        &command,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    // The seeder's own top, which shows whom it serves.
    let seed_tmux = Tmux(format!("lanspread-top-seed-{}", std::process::id()));
    let seed_command = format!(
        "{} --socket {} top",
        common::lanspreadctl().display(),
        seed.socket.display(),
    );
    assert!(
        seed_tmux
            .run(&[
                "new-session",
                "-d",
                "-s",
                &seed_tmux.0,
                "-x",
                "150",
                "-y",
                "40",
                &seed_command
            ])
            .status
            .success()
    );
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let screen = seed_tmux.screen();
        // "serving: leech 6.0 MiB/s", and the leech's round-trip time.
        if screen.contains("serving: leech") && screen.contains(" ms") {
            eprintln!("{screen}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the seeder's top never showed whom it serves:\n{screen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The screen follows the events; give it a few of them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let screen = loop {
        let screen = tmux.screen();
        if screen.contains("/s") && screen.contains("1 peers") {
            break screen;
        }
        assert!(
            Instant::now() < deadline,
            "top never showed the rate:\n{screen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("{screen}");
    for expected in [
        GAME,
        "download",
        "running",
        "MiB/s",
        "1 peers",
        "seed",
        "connected",
    ] {
        assert!(
            screen.contains(expected),
            "{expected} not on screen:\n{screen}"
        );
    }
    assert!(
        tmux.run(&["send-keys", "-t", &tmux.0, "q"])
            .status
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while tmux.alive() {
        assert!(
            Instant::now() < deadline,
            "top did not quit on q:\n{}",
            tmux.screen()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let code = std::fs::read_to_string(&exit_file).expect("top exited");
    assert_eq!(code.trim(), "0", "top's exit status");
    wait_finished(&mut events).await;
}

/// `bytes_done` of the next progress event.
async fn progress_bytes(events: &mut lanspread_proto::client::IpcClient) -> u64 {
    loop {
        if let Some(PeerEvent::DownloadGameFilesProgress { bytes_done, .. }) =
            wait_outcome_or_progress(events).await
        {
            return bytes_done;
        }
    }
}

/// `bytes` of the download's finish event.
async fn finished_bytes(events: &mut lanspread_proto::client::IpcClient) -> u64 {
    loop {
        match wait_outcome_or_progress(events).await {
            Some(PeerEvent::DownloadGameFilesFinished { bytes, .. }) => return bytes,
            Some(_) => {}
            None => panic!("download failed"),
        }
    }
}

/// The next progress or finish event; `None` when the download failed.
async fn wait_outcome_or_progress(
    events: &mut lanspread_proto::client::IpcClient,
) -> Option<PeerEvent> {
    let event = common::wait_for_event(events, DOWNLOAD_TIMEOUT, "download progress", |e| {
        matches!(
            e,
            PeerEvent::DownloadGameFilesProgress { .. }
                | PeerEvent::DownloadGameFilesFinished { .. }
                | PeerEvent::DownloadGameFilesFailed { .. }
        )
    })
    .await
    .event;
    (!matches!(event, PeerEvent::DownloadGameFilesFailed { .. })).then_some(event)
}
