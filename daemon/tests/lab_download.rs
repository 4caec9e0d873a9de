//! Lab tests of the download pipeline: real daemons on isolated hosts,
//! real mDNS, QUIC over (optionally shaped) links, real faults.

mod common;
mod lab_harness;

use common::archives::{assert_tree, build_all};
use common::{wait_for_event, write};
use lab_harness::Lab;
use lab_harness::game::*;
use lanspread_proto::ipc::PeerEvent;
use lanspread_proto::wire::CHUNK_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn lanspreadctl_downloads_from_two_seeders_and_every_byte_matches() {
    let game = make_game(CHUNK_SIZE * 6 + 4321);
    let lab = Lab::up(3);
    let _a = lab.spawn_daemon("h1", "seed-a", copy_game(game.path()));
    let _b = lab.spawn_daemon("h2", "seed-b", copy_game(game.path()));
    let leech = lab.spawn_daemon("h3", "leech", |_| {});
    wait_peers(&leech, 2).await;
    let output = leech.ctl(&["download", GAME]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("downloaded openarena 0.8.8"), "{stdout}");
    assert_identical(game.path(), &leech.games());
    let games = leech.client().await.list_games().await.unwrap();
    assert!(games.iter().any(|g| g.id == id() && g.downloaded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_seeder_killed_mid_download_leaves_the_other_to_finish() {
    let game = make_game(CHUNK_SIZE * 16);
    let lab = Lab::up(3);
    let a = lab.spawn_daemon("h1", "seed-a", copy_game(game.path()));
    let _b = lab.spawn_daemon("h2", "seed-b", copy_game(game.path()));
    lab.shape("h1", "100mbit");
    lab.shape("h2", "100mbit");
    let leech = lab.spawn_daemon("h3", "leech", |_| {});
    wait_peers(&leech, 2).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.2).await;
    drop(a); // SIGKILL, mid-download
    wait_finished(&mut events).await;
    assert_identical(game.path(), &leech.games());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_seeder_sending_bad_chunks_is_named_and_the_bytes_are_still_right() {
    let game = make_game(CHUNK_SIZE * 10);
    let lab = Lab::up(3);
    let bad_work = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(bad_work.path().join("games")).unwrap();
    copy_game(game.path())(&bad_work.path().join("games"));
    let bad = lab.spawn_in(
        "h1",
        "liar",
        bad_work,
        &[("LANSPREAD_TEST_CORRUPT_EVERY", "2")],
    );
    let _good = lab.spawn_daemon("h2", "honest", copy_game(game.path()));
    let leech = lab.spawn_daemon("h3", "leech", |_| {});
    wait_peers(&leech, 2).await;
    let bad_id = bad.client().await.hello().peer_id.clone();
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    wait_finished(&mut events).await;
    assert_identical(game.path(), &leech.games());
    let log = leech.log_text();
    let named = log
        .lines()
        .any(|l| l.contains("failed verification") && l.contains(&bad_id));
    assert!(
        named,
        "the bad peer {bad_id} must be named in the log:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_downloader_killed_mid_download_resumes_with_only_unverified_chunks() {
    let run = interrupt_and_resume(Interruption::Kill).await;
    assert!(
        run.resumed >= run.total * 3 / 10,
        "only {} of {} resumed",
        run.resumed,
        run.total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn shaped_links_give_the_slow_peer_proportionally_less() {
    let game = make_game(CHUNK_SIZE * 24);
    let lab = Lab::up(3);
    let fast = lab.spawn_daemon("h1", "fast", copy_game(game.path()));
    let slow = lab.spawn_daemon("h2", "slow", copy_game(game.path()));
    lab.shape("h1", "200mbit");
    lab.shape("h2", "50mbit");
    let leech = lab.spawn_daemon("h3", "leech", |_| {});
    wait_peers(&leech, 2).await;
    let fast_id = fast.client().await.hello().peer_id.clone();
    let slow_id = slow.client().await.hello().peer_id.clone();
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    let millis = wait_finished(&mut events).await.millis;
    assert_identical(game.path(), &leech.games());

    let log = leech.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("download finished"))
        .expect("the finish line names bytes per peer");
    let bytes_of = |peer: &str| -> f64 {
        let at = line
            .find(peer)
            .unwrap_or_else(|| panic!("{peer} not in {line}"));
        line[at + peer.len()..]
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (fast_bytes, slow_bytes) = (bytes_of(&fast_id), bytes_of(&slow_id));
    let share = slow_bytes / (fast_bytes + slow_bytes);
    let total = fast_bytes + slow_bytes;
    let achieved_mbit = total * 8.0 / 1e6 / (millis as f64 / 1000.0);
    eprintln!(
        "measured: slow peer (50 of 250 Mbit/s) served {:.0} % of the bytes; achieved {achieved_mbit:.0} Mbit/s = {:.2} of the 250 Mbit/s sum",
        share * 100.0,
        achieved_mbit / 250.0
    );
    // The slow link is 20 % of the capacity: it must not get half the work.
    assert!(share < 0.35, "slow peer share {share:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn a_cancelled_download_leaves_no_sentinel_and_the_next_one_succeeds() {
    let game = make_game(CHUNK_SIZE * 12);
    let lab = Lab::up(2);
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(game.path()));
    // Slow enough (about 10 s) that the cancel, sent after the first tenth,
    // always finds the download running, even on a loaded machine.
    lab.shape("h1", "40mbit");
    let leech = lab.spawn_daemon("h2", "leech", |_| {});
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    start_download(&mut leech.client().await).await;
    wait_progress(&mut events, 0.1).await;
    let cancel = leech.ctl(&["cancel", GAME]);
    assert_eq!(
        cancel.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&cancel.stderr)
    );
    wait_for_event(
        &mut events,
        DOWNLOAD_TIMEOUT,
        "DownloadGameFilesCancelled",
        |e| matches!(e, PeerEvent::DownloadGameFilesCancelled { .. }),
    )
    .await;
    let root = leech.games().join(GAME);
    for name in ["version.ini", ".version.ini.tmp", ".version.ini.discarded"] {
        assert!(!root.join(name).exists(), "{name} after cancel");
    }
    assert_eq!(
        leech.ctl(&["status"]).status.code(),
        Some(0),
        "daemon unhealthy after cancel"
    );
    let again = leech.ctl(&["download", GAME]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_identical(game.path(), &leech.games());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: network lab (`just test` runs it)"]
async fn an_update_fetches_the_newer_version_a_peer_offers() {
    let old = make_game(CHUNK_SIZE + 10);
    let lab = Lab::up(2);
    let newer = tempfile::tempdir().unwrap();
    copy_tree(&old.path().join(GAME), &newer.path().join(GAME));
    write(
        &newer.path().join(GAME).join("version.ini"),
        b"version=0.9.0\n",
    );
    write(
        &newer.path().join(GAME).join("pak0.eti"),
        &vec![9u8; (CHUNK_SIZE * 2) as usize],
    );
    let _seed = lab.spawn_daemon("h1", "seed", copy_game(newer.path()));
    let leech = lab.spawn_daemon("h2", "leech", copy_game(old.path()));
    wait_peers(&leech, 1).await;
    let games = leech.client().await.list_games().await.unwrap();
    let listed = games.iter().find(|g| g.id == id()).unwrap();
    assert_eq!(
        listed.version.as_ref().unwrap().as_str(),
        "0.9.0",
        "the merged library shows the latest"
    );
    let update = leech.ctl(&["update", GAME]);
    let stdout = String::from_utf8_lossy(&update.stdout);
    assert_eq!(
        update.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&update.stderr)
    );
    assert!(stdout.contains("0.9.0"), "{stdout}");
    assert_identical(newer.path(), &leech.games());
}

/// Issue 14: a game whose files and archive entries have non-ASCII names,
/// served by a daemon started with `LC_ALL=C`, is downloaded by one started
/// with no environment at all (`env -i`) and installs there: every file
/// arrives under its exact name with its exact bytes, and `local/` holds
/// exactly what the archives hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_game_with_non_ascii_names_downloads_and_installs_on_another_host() {
    let source = tempfile::tempdir().unwrap();
    let root = source.path().join(GAME);
    let mut loose: Vec<(String, Vec<u8>)> = vec![("version.ini".into(), b"version=1.0\n".to_vec())];
    for (i, name) in [
        "データ/マップ 1.eti",
        "Überspiel/straße.cfg",
        "Ελληνικά/файл Ω.dat",
        "emoji 🎮.bin",
    ]
    .into_iter()
    .enumerate()
    {
        // The first spans three chunks.
        let len = if i == 0 {
            CHUNK_SIZE as usize * 2 + 4321
        } else {
            777 * (i + 1)
        };
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(name.as_bytes())
            .finalize_xof()
            .fill(&mut data);
        loose.push((name.to_owned(), data));
    }
    for (name, data) in &loose {
        write(&root.join(name), data);
    }
    let archived = build_all(&root);
    let mut served = loose.clone();
    for (_, file_name) in common::archives::KINDS {
        served.push((
            file_name.to_owned(),
            std::fs::read(root.join(file_name)).unwrap(),
        ));
    }

    let lab = Lab::up(2);
    let _seed =
        lab.spawn_daemon_env_cleared("h1", "seed", copy_game(source.path()), &[("LC_ALL", "C")]);
    let leech = lab.spawn_daemon_env_cleared("h2", "leech", |_| {}, &[]);
    wait_peers(&leech, 1).await;
    let mut events = leech.client().await;
    events.subscribe().await.unwrap();
    let output = leech.ctl(&["download", GAME]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome = wait_for_event(&mut events, DOWNLOAD_TIMEOUT, "the install", |e| {
        matches!(
            e,
            PeerEvent::InstallGameFinished { .. } | PeerEvent::InstallGameFailed { .. }
        )
    })
    .await;
    assert!(
        matches!(outcome.event, PeerEvent::InstallGameFinished { .. }),
        "{:?}\n{}",
        outcome.event,
        leech.log_text()
    );
    let leech_root = leech.games().join(GAME);
    assert_tree(&leech_root.join("local"), &archived);
    for (name, data) in &served {
        let got = std::fs::read(leech_root.join(name))
            .unwrap_or_else(|err| panic!("{name} did not arrive under its name: {err}"));
        assert!(&got == data, "{name} differs");
    }
    let games = leech.client().await.list_games().await.unwrap();
    let game = games.iter().find(|g| g.id == id()).unwrap();
    assert!(game.downloaded && game.installed, "{game:?}");
}
