//! The IPC server in-process: every command that works, every kind of bad
//! input, and the guarantees that keep one client from hurting others.

mod common;

use std::time::{Duration, Instant};

use common::*;
use lanspread_proto::client::ClientError;
use lanspread_proto::ipc::{Access, ErrorCode, PeerCommand, PeerEvent};
use lanspread_proto::model::{GameId, RateLimits};

fn id(s: &str) -> GameId {
    GameId::new(s).unwrap()
}

fn error_code(err: ClientError) -> ErrorCode {
    err.daemon_error()
        .unwrap_or_else(|| panic!("expected a daemon error, got {err}"))
        .code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_games_reports_each_cataloged_root_and_leaves_the_rest_out() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut client = daemon.client().await;
    assert_eq!(client.hello().access, Access::Operator);
    let games = client.list_games().await.unwrap();
    let ids: Vec<_> = games.iter().map(|g| g.id.as_str()).collect();
    assert_eq!(ids, ["openarena", "quake3"]);
    let oa = &games[0];
    assert_eq!(oa.name, "OpenArena");
    assert_eq!(oa.version.as_ref().unwrap().as_str(), "0.8.8");
    assert!(oa.downloaded && oa.installed);
    assert_eq!(oa.size, 1000 + 500 + "version=0.8.8\n".len() as u64);
    assert_eq!(oa.peers, 0);
    let q3 = &games[1];
    assert_eq!(q3.version.as_ref().unwrap().as_str(), "1.32c");
    assert!(q3.downloaded && !q3.installed);

    let status = client.status().await.unwrap();
    assert_eq!(
        status.game_dir.as_deref(),
        Some(&*std::fs::canonicalize(daemon.game_dir.path()).unwrap())
    );
    assert_eq!(status.local_games, 2);
    assert_eq!(status.peer_count, 0);
    assert_eq!(status.peer_id.len(), 32);
    assert_eq!(status.peer_id, client.hello().peer_id);
    // The root the catalog does not know is named, with the reason.
    assert_eq!(status.catalog, "test");
    assert_eq!(
        status.ignored_roots,
        [lanspread_proto::model::IgnoredRoot {
            name: "not-in-catalog".into(),
            reason: "not in the catalog".into()
        }]
    );
    assert_eq!(client.peer_count().await.unwrap(), 0);
    assert!(client.list_peers().await.unwrap().is_empty());
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_that_cannot_run_get_clear_error_codes() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut client = daemon.client().await;
    for (command, code) in [
        (
            PeerCommand::GetGame {
                id: id("openarena"),
            },
            ErrorCode::NoPeers,
        ),
        (
            PeerCommand::FetchLatestFromPeers {
                id: id("openarena"),
            },
            ErrorCode::NoPeers,
        ),
        (
            PeerCommand::DownloadGameFiles {
                id: id("openarena"),
                files: vec![],
            },
            ErrorCode::NotRunning,
        ),
        (
            PeerCommand::CancelDownload {
                id: id("openarena"),
            },
            ErrorCode::NotRunning,
        ),
        (
            PeerCommand::InstallGame {
                id: id("teeworlds"),
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PeerCommand::UninstallGame { id: id("quake3") },
            ErrorCode::InvalidRequest,
        ),
        (
            PeerCommand::VerifyGame {
                id: id("teeworlds"),
                repair: false,
            },
            ErrorCode::InvalidRequest,
        ),
    ] {
        let name = command.name();
        let err = client.request(command).await.unwrap_err();
        assert_eq!(error_code(err), code, "{name}");
    }
    // Nothing was touched.
    assert!(daemon.game_dir.path().join("openarena/local").is_dir());
    assert!(
        daemon
            .game_dir
            .path()
            .join("openarena/version.ini")
            .is_file()
    );
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_limits_changes_what_status_reports_and_refuses_bad_values() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut client = daemon.client().await;
    assert_eq!(client.status().await.unwrap().limits, RateLimits::default());
    let set = client.set_limits(Some(12_500_000), None).await.unwrap();
    assert_eq!(
        set,
        RateLimits {
            upload: 12_500_000,
            download: 0
        }
    );
    // An omitted limit stays; 0 lifts one.
    let set = client.set_limits(Some(0), Some(1 << 20)).await.unwrap();
    assert_eq!(
        set,
        RateLimits {
            upload: 0,
            download: 1 << 20
        }
    );
    assert_eq!(client.status().await.unwrap().limits, set);
    // A rate that is not a number changes nothing.
    let mut raw = RawClient::connect(&daemon.socket).await;
    raw.send(b"{\"id\":3,\"command\":{\"type\":\"SetLimits\",\"upload\":\"fast\"}}\n")
        .await;
    let reply = raw.read_json().await.unwrap();
    assert_eq!(reply["error"]["code"], "invalid_request", "{reply}");
    assert_eq!(client.status().await.unwrap().limits, set);
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_get_clear_errors_and_the_connection_lives_on() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut raw = RawClient::connect(&daemon.socket).await;
    let cases: [(&[u8], serde_json::Value, &str); 5] = [
        (
            b"{\"id\": 1, \"command\": \n",
            serde_json::Value::Null,
            "malformed_json",
        ),
        (
            b"\xff\xfe garbage\n",
            serde_json::Value::Null,
            "malformed_json",
        ),
        (
            b"{\"id\":2,\"command\":{\"type\":\"Reboot\"}}\n",
            2.into(),
            "unknown_command",
        ),
        (
            b"{\"id\":3,\"command\":{\"type\":\"SetGameDir\"}}\n",
            3.into(),
            "invalid_request",
        ),
        (b"{\"id\":4}\n", 4.into(), "invalid_request"),
    ];
    for (line, want_id, want_code) in cases {
        raw.send(line).await;
        let reply = raw.read_json().await.unwrap();
        assert_eq!(reply["kind"], "reply", "{reply}");
        assert_eq!(reply["id"], want_id, "{reply}");
        assert_eq!(reply["error"]["code"], want_code, "{reply}");
    }
    // A line over 1 MiB is skipped with an error; the next line is served.
    let mut long = vec![b'x'; lanspread_proto::ipc::MAX_LINE_BYTES + 100];
    long.push(b'\n');
    raw.send(&long).await;
    let reply = raw.read_json().await.unwrap();
    assert_eq!(reply["error"]["code"], "line_too_long", "{reply}");
    raw.send(b"{\"id\":5,\"command\":{\"type\":\"GetPeerCount\"}}\n")
        .await;
    let reply = raw.read_json().await.unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"kind":"reply","id":5,"result":{"count":0}})
    );
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_mid_line_costs_nobody_anything() {
    let daemon = TestDaemon::start(sample_library).await;
    for _ in 0..20 {
        let mut raw = RawClient::connect(&daemon.socket).await;
        raw.send(b"{\"id\":1,\"command\":{\"type\":\"Li").await;
        drop(raw);
    }
    let mut client = daemon.client().await;
    assert_eq!(client.list_games().await.unwrap().len(), 2);
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_at_once_are_all_served() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let socket = daemon.socket.clone();
        tasks.spawn(async move {
            let mut client = lanspread_proto::client::IpcClient::connect(&socket)
                .await
                .unwrap();
            for _ in 0..20 {
                assert_eq!(client.list_games().await.unwrap().len(), 2);
            }
            client.status().await.unwrap()
        });
    }
    let mut served = 0;
    while let Some(status) = tokio::time::timeout(TIMEOUT, tasks.join_next())
        .await
        .unwrap()
    {
        assert_eq!(status.unwrap().local_games, 2);
        served += 1;
    }
    assert_eq!(served, 50);
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_starts_with_the_snapshot_and_events_follow_in_sequence() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut watcher = daemon.client().await;
    let subscribed = watcher.subscribe().await.unwrap();
    let first = watcher.next_event().await.unwrap();
    assert_eq!(first.seq, subscribed.seq);
    let PeerEvent::LibrarySnapshot { games } = first.event else {
        panic!("first event must be the library snapshot, got {first:?}");
    };
    assert_eq!(games.len(), 2);

    let other = tempfile::tempdir().unwrap();
    write(&other.path().join("teeworlds/version.ini"), b"0.7.5");
    let mut operator = daemon.client().await;
    let result = operator.set_game_dir(other.path()).await.unwrap();
    assert_eq!(result.games, 1);

    let changed = watcher.next_event().await.unwrap();
    assert_eq!(changed.seq, first.seq + 1);
    assert!(
        matches!(changed.event, PeerEvent::GameDirChanged { ref path } if path == &std::fs::canonicalize(other.path()).unwrap())
    );
    let snapshot = watcher.next_event().await.unwrap();
    assert_eq!(snapshot.seq, first.seq + 2);
    let PeerEvent::LibrarySnapshot { games } = snapshot.event else {
        panic!("expected a snapshot, got {snapshot:?}");
    };
    assert_eq!(
        games.iter().map(|g| g.id.as_str()).collect::<Vec<_>>(),
        ["teeworlds"]
    );
    // The watcher can still issue requests while subscribed.
    assert_eq!(watcher.list_games().await.unwrap().len(), 1);
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_dropped_without_slowing_anyone() {
    let daemon = TestDaemon::start(sample_library).await;
    // Subscribe on a raw connection, then never read again.
    let mut stalled = RawClient::connect(&daemon.socket).await;
    stalled
        .send(b"{\"id\":1,\"command\":{\"type\":\"Subscribe\"}}\n")
        .await;
    let stalled = stalled.into_stream();

    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write(&a.path().join("openarena/version.ini"), b"1");
    write(&b.path().join("quake3/version.ini"), b"2");
    let mut operator = daemon.client().await;
    let mut slowest = Duration::ZERO;
    // Each switch publishes two events: far more than the subscriber buffer.
    let switches = lanspreadd::core::EVENT_BUFFER;
    for i in 0..switches {
        let dir = if i % 2 == 0 { a.path() } else { b.path() };
        let started = Instant::now();
        operator.set_game_dir(dir).await.unwrap();
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?}"
    );

    // The stalled client has been cut off: reading it now reaches EOF.
    let mut reader = tokio::io::BufReader::new(stalled);
    let mut lines = 0usize;
    let mut last = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(
            TIMEOUT,
            tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line),
        )
        .await
        .expect("the daemon closes a stalled subscriber")
        .unwrap_or(0);
        if n == 0 {
            break;
        }
        lines += 1;
        last = line;
    }
    assert!(
        lines < 2 * switches,
        "all {lines} lines were delivered; nothing was bounded"
    );
    // If the goodbye fit in the buffer, it names the reason.
    if last.contains("\"closing\"") {
        assert!(
            last.contains("behind") || last.contains("did not read"),
            "{last}"
        );
    }
    assert_eq!(operator.list_games().await.unwrap().len(), 1);
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_game_dir_refuses_bad_paths_and_keeps_the_old_one() {
    let daemon = TestDaemon::start(sample_library).await;
    let mut client = daemon.client().await;
    let before = client.status().await.unwrap().game_dir;
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("file");
    write(&file, b"x");
    for path in [
        scratch.path().join("missing"),
        file,
        "relative/games".into(),
        "".into(),
    ] {
        let err = client.set_game_dir(&path).await.unwrap_err();
        assert_eq!(
            error_code(err),
            ErrorCode::InvalidGameDir,
            "{}",
            path.display()
        );
    }
    assert_eq!(client.status().await.unwrap().game_dir, before);
    assert_eq!(client.list_games().await.unwrap().len(), 2);
    daemon.stop().await.0.unwrap();
}

/// An unwritable directory: a read-only mount, since permission bits do
/// not stop root. Needs root (CI runs as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: mounts a read-only tmpfs (`just test` runs it)"]
async fn set_game_dir_refuses_an_unwritable_directory() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to mount a read-only tmpfs (CI runs as root)"
    );
    let daemon = TestDaemon::start(sample_library).await;
    let mount_point = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "lanspread-test"])
        .arg(mount_point.path())
        .status()
        .expect("mount runs");
    assert!(status.success(), "mounting a read-only tmpfs failed");
    let mut client = daemon.client().await;
    let result = client.set_game_dir(mount_point.path()).await;
    let unmount = std::process::Command::new("umount")
        .arg(mount_point.path())
        .status();
    let err = result.unwrap_err();
    assert_eq!(err.daemon_error().unwrap().code, ErrorCode::InvalidGameDir);
    assert!(
        err.daemon_error().unwrap().message.contains("not writable"),
        "{err}"
    );
    assert!(unmount.unwrap().success());
    daemon.stop().await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_game_dir_set_at_runtime_survives_a_restart() {
    let daemon = TestDaemon::start(|_| {}).await;
    let games = tempfile::tempdir().unwrap();
    sample_library(games.path());
    let socket = daemon.socket.clone();
    {
        let mut client = daemon.client().await;
        client.set_game_dir(games.path()).await.unwrap();
    }
    let (result, _old_games, state_dir) = daemon.stop().await;
    result.unwrap();
    assert!(!socket.exists(), "shutdown removes the socket");

    let config = test_config(None, state_dir.path(), &socket);
    let (shutdown, task) = spawn_daemon(config).await;
    let mut client = lanspread_proto::client::IpcClient::connect(&socket)
        .await
        .unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(
        status.game_dir,
        Some(std::fs::canonicalize(games.path()).unwrap())
    );
    assert_eq!(client.list_games().await.unwrap().len(), 2);
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced_but_a_live_daemon_is_never_displaced() {
    let state = tempfile::tempdir().unwrap();
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("lanspreadd.sock");
    // A socket file nobody listens on, as a SIGKILLed daemon leaves it.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let (shutdown, task) = spawn_daemon(test_config(None, state.path(), &socket)).await;
    let mut first = lanspread_proto::client::IpcClient::connect(&socket)
        .await
        .unwrap();

    let other_state = tempfile::tempdir().unwrap();
    let (_, second) = spawn_daemon(test_config(None, other_state.path(), &socket)).await;
    let err = tokio::time::timeout(TIMEOUT, second)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("already serving"), "{err}");
    // The first daemon still owns its socket.
    assert_eq!(first.status().await.unwrap().name, "test-daemon");

    shutdown.cancel();
    task.await.unwrap().unwrap();

    // Something that is not a socket is never deleted.
    std::fs::write(&socket, b"precious").unwrap();
    let (_, third) = spawn_daemon(test_config(None, other_state.path(), &socket)).await;
    let err = tokio::time::timeout(TIMEOUT, third)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&socket).unwrap(), b"precious");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_game_dir_flag_stops_the_start_with_a_reason() {
    let state = tempfile::tempdir().unwrap();
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("s.sock");
    let config = test_config(
        Some("/nonexistent/lanspread/games".into()),
        state.path(),
        &socket,
    );
    let (_, task) = spawn_daemon(config).await;
    let err = task.await.unwrap().unwrap_err();
    let text = lanspreadd::error_chain::err_chain(&err);
    assert!(text.contains("does not exist"), "{text}");
    assert!(!socket.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_gets_exactly_the_requested_mode() {
    use std::os::unix::fs::PermissionsExt;
    for mode in [0o666, 0o660] {
        let state = tempfile::tempdir().unwrap();
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir.path().join("s.sock");
        let mut config = test_config(None, state.path(), &socket);
        config.socket_mode = mode;
        let (shutdown, task) = spawn_daemon(config).await;
        let actual = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(actual, mode, "requested {mode:o}, got {actual:o}");
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
