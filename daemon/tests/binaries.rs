//! The real binaries: `lanspreadd` started as a process, driven by
//! `lanspreadctl` as an admin's script would, checking output and exit
//! codes.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{daemon_args, lanspreadctl, sample_library, wait_socket, write};
use tempfile::TempDir;

fn lanspreadd() -> PathBuf {
    env!("CARGO_BIN_EXE_lanspreadd").into()
}

/// A `lanspreadd` process on temp dirs; killed (by pid) if still running
/// when dropped.
struct DaemonProcess {
    child: Child,
    socket: PathBuf,
    game_dir: TempDir,
    _state_dir: TempDir,
    _socket_dir: TempDir,
}

impl DaemonProcess {
    fn start(setup: impl FnOnce(&Path), extra_args: &[&str]) -> Self {
        Self::start_with(setup, extra_args, |_| {})
    }

    /// As [`Self::start`], with the command adjusted by `environment`
    /// before it is spawned (a cleared or changed environment).
    fn start_with(
        setup: impl FnOnce(&Path),
        extra_args: &[&str],
        environment: impl FnOnce(&mut Command),
    ) -> Self {
        let game_dir = tempfile::tempdir().unwrap();
        setup(game_dir.path());
        let state_dir = tempfile::tempdir().unwrap();
        let socket_dir = tempfile::tempdir().unwrap();
        // Other users must reach the socket (access is decided per client).
        std::fs::set_permissions(
            socket_dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let socket = socket_dir.path().join("lanspreadd.sock");
        let args = daemon_args(game_dir.path(), state_dir.path(), &socket);
        let mut command = Command::new(&args[0]);
        command
            .args(&args[1..])
            .args(extra_args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        environment(&mut command);
        let child = command.spawn().unwrap();
        let mut daemon = Self {
            child,
            socket,
            game_dir,
            _state_dir: state_dir,
            _socket_dir: socket_dir,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        wait_socket(&mut self.child, &self.socket, String::new);
    }

    fn ctl(&self, args: &[&str]) -> Output {
        ctl_with(&self.socket, args, None)
    }

    /// SIGTERM, then wait for the exit; returns stderr.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "lanspreadd ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status, stderr)
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ctl_with(socket: &Path, args: &[&str], uid: Option<u32>) -> Output {
    let mut command = Command::new(lanspreadctl());
    command.arg("--socket").arg(socket).args(args);
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.output().unwrap()
}

fn stdout_json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "lanspreadctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("--json output is JSON")
}

/// `games --json` once no game is being prepared any more (the daemon
/// hashes its games in the background after it started, so a first answer
/// may still say `preparing`).
fn games_once_prepared(daemon: &DaemonProcess) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let games = stdout_json(&daemon.ctl(&["--json", "games"]));
        let preparing = games
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g.get("preparing").is_some());
        if !preparing {
            return games;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "games still preparing after 10 s: {games}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctl_json_games_lists_each_cataloged_root_with_its_facts() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    let games = games_once_prepared(&daemon);
    let games = games.as_array().unwrap();
    // The bundled catalog knows openarena and quake3; the rest is left out.
    let ids: Vec<_> = games.iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["openarena", "quake3"]);
    assert_eq!(
        games[0],
        serde_json::json!({
            "id": "openarena", "name": "OpenArena", "version": "0.8.8",
            "downloaded": true, "installed": true, "size": 1514, "peers": 0,
            "downloading": 0
        })
    );
    assert_eq!(games[1]["version"], "1.32c");
    assert_eq!(games[1]["installed"], false);

    let status = stdout_json(&daemon.ctl(&["--json", "status"]));
    assert_eq!(status["peer_count"], 0);
    assert!(status["listen"].as_str().unwrap().starts_with("0.0.0.0:"));
    assert_eq!(status["peer_id"].as_str().unwrap().len(), 32);
    assert!(status["game_dir"].as_str().is_some());
    assert_eq!(
        stdout_json(&daemon.ctl(&["--json", "peers"])),
        serde_json::json!([])
    );

    // Human output is a table.
    let human = daemon.ctl(&["games"]);
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.contains("OpenArena") && text.contains("1.5 KiB"),
        "{text}"
    );
}

#[test]
fn a_custom_catalog_replaces_the_bundled_one() {
    let catalog_dir = tempfile::tempdir().unwrap();
    let catalog = catalog_dir.path().join("catalog.json");
    write(
        &catalog,
        br#"[{"id":"not-in-catalog","name":"Now Listed"}]"#,
    );
    let daemon = DaemonProcess::start(sample_library, &["--catalog", catalog.to_str().unwrap()]);
    let games = stdout_json(&daemon.ctl(&["--json", "games"]));
    assert_eq!(
        games
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].clone())
            .collect::<Vec<_>>(),
        ["Now Listed"]
    );
}

#[test]
fn exit_codes_follow_the_spec() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    assert_eq!(daemon.ctl(&["status"]).status.code(), Some(0));
    // 1: the daemon refused the operation.
    // (openarena's pak0.eti is no archive: the update fails, local/ stays.)
    let refused = daemon.ctl(&["install", "openarena"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("install of openarena failed"), "{stderr}");
    let refused = daemon.ctl(&["download", "openarena"]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("no_peers"), "{stderr}");
    let refused = daemon.ctl(&["set-game-dir", "/nonexistent/games"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not exist"));
    // 2: usage errors, caught before or by the client.
    assert_eq!(daemon.ctl(&["no-such-command"]).status.code(), Some(2));
    assert_eq!(
        daemon.ctl(&["install", "Not A Valid Id"]).status.code(),
        Some(2)
    );
    // 3: nothing listens there; the message names the socket.
    let missing = Path::new("/nonexistent/lanspread.sock");
    let unreachable = ctl_with(missing, &["status"], None);
    assert_eq!(unreachable.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("/nonexistent/lanspread.sock"));
}

#[test]
fn set_game_dir_resolves_relative_paths_on_the_client_side() {
    let daemon = DaemonProcess::start(|_| {}, &[]);
    let other = tempfile::tempdir().unwrap();
    sample_library(other.path());
    let output = Command::new(lanspreadctl())
        .current_dir(other.path().parent().unwrap())
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["--json", "set-game-dir"])
        .arg(other.path().file_name().unwrap())
        .output()
        .unwrap();
    let result = stdout_json(&output);
    assert_eq!(result["games"], 2);
    assert_eq!(
        PathBuf::from(result["path"].as_str().unwrap()),
        std::fs::canonicalize(other.path()).unwrap()
    );
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_removes_its_socket() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    let socket = daemon.socket.clone();
    let (status, stderr) = daemon.terminate();
    assert!(status.success(), "exit status {status}; log:\n{stderr}");
    assert!(!socket.exists(), "socket left behind");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

#[test]
fn a_second_daemon_on_the_same_socket_refuses_to_start() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    let state = tempfile::tempdir().unwrap();
    let output = Command::new(lanspreadd())
        .arg("--state-dir")
        .arg(state.path())
        .arg("--socket")
        .arg(&daemon.socket)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");
    // The first one is unharmed.
    assert_eq!(daemon.ctl(&["status"]).status.code(), Some(0));
}

#[test]
fn events_prints_the_snapshot_first_as_one_json_line() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    let mut events = Command::new(lanspreadctl())
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("events")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(events.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    let _ = events.kill();
    let _ = events.wait();
    let event: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["event"]["type"], "LibrarySnapshot");
    assert_eq!(event["event"]["games"].as_array().unwrap().len(), 2);
    assert!(event["seq"].is_u64());
}

/// A user outside the operator group reads but cannot change anything.
/// Needs root to run the client as another uid (CI runs as root).
#[test]
#[ignore = "needs root: runs the client as another user (`just test` runs it)"]
fn other_users_get_read_only_access() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root to run lanspreadctl as another user (CI runs as root)"
    );
    let nobody = 65534;
    let daemon = DaemonProcess::start(sample_library, &["--operator-group", ""]);
    let games = ctl_with(&daemon.socket, &["--json", "games"], Some(nobody));
    assert_eq!(stdout_json(&games).as_array().unwrap().len(), 2);
    let status = ctl_with(&daemon.socket, &["status"], Some(nobody));
    assert!(String::from_utf8_lossy(&status.stdout).contains("your access read-only"));
    let refused = ctl_with(&daemon.socket, &["set-game-dir", "/tmp"], Some(nobody));
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("permission_denied"), "{stderr}");
    // Limits may be read, not changed.
    let limits = ctl_with(&daemon.socket, &["limits"], Some(nobody));
    assert!(String::from_utf8_lossy(&limits.stdout).contains("upload      none"));
    let refused = ctl_with(
        &daemon.socket,
        &["limits", "--upload", "1MiB"],
        Some(nobody),
    );
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("permission_denied"), "{stderr}");
    // Root still has every right.
    let status = daemon.ctl(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("your access operator"));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let daemon = DaemonProcess::start(sample_library, &["--log-format", "json"]);
    let (_, stderr) = daemon.terminate();
    let lines: Vec<_> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).expect("json log line");
        assert!(value["level"].is_string(), "{line}");
    }
}

#[test]
fn every_setting_can_come_from_the_environment() {
    let work = tempfile::tempdir().unwrap();
    let games = work.path().join("games");
    sample_library(&games);
    let catalog = work.path().join("catalog.json");
    write(&catalog, br#"[{"id":"quake3","name":"From Env"}]"#);
    let socket = work.path().join("env.sock");
    let mut child = Command::new(lanspreadd())
        .env("LANSPREAD_GAME_DIR", &games)
        .env("LANSPREAD_STATE_DIR", work.path().join("state"))
        .env("LANSPREAD_SOCKET", &socket)
        .env("LANSPREAD_CATALOG", &catalog)
        .env("LANSPREAD_NAME", "env-named")
        .env("LANSPREAD_SOCKET_MODE", "0660")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "lanspreadd exited");
        assert!(
            Instant::now() < deadline,
            "lanspreadd did not open its socket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // lanspreadctl finds the socket through the same variable.
    let output = Command::new(lanspreadctl())
        .env("LANSPREAD_SOCKET", &socket)
        .args(["--json", "status"])
        .output()
        .unwrap();
    let status = stdout_json(&output);
    assert_eq!(status["name"], "env-named");
    let games = stdout_json(&ctl_with(&socket, &["--json", "games"], None));
    assert_eq!(games[0]["name"], "From Env");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o660);
    let _ = child.kill();
    let _ = child.wait();
}

/// The machine's own namespace runs no Avahi (and must not): the daemon
/// starts anyway, serves its socket, and says why discovery is down.
#[test]
fn without_avahi_the_daemon_serves_and_reports_discovery_down() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = stdout_json(&daemon.ctl(&["--json", "status"]));
        let reasons: Vec<String> = status["unavailable"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["component"] == "discovery")
            .map(|u| u["reason"].as_str().unwrap().to_owned())
            .collect();
        if let Some(reason) = reasons.first() {
            assert!(reason.contains("avahi"), "{reason}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "discovery failure never reported: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon.ctl(&["games"]).status.code(), Some(0));
    let (_, log) = daemon.terminate();
    assert!(log.contains("mdns discovery failed"), "{log}");
}

#[test]
fn settings_file_flag_and_environment_take_precedence_in_that_order() {
    let work = tempfile::tempdir().unwrap();
    let games = work.path().join("games");
    sample_library(&games);
    let config = work.path().join("lanspreadd.toml");
    std::fs::write(
        &config,
        format!(
            "game-dir = {:?}\nstate-dir = {:?}\nname = \"from-file\"\nsocket-mode = \"0660\"\nupload-limit = \"80Mbit\"\n",
            games,
            work.path().join("state")
        ),
    )
    .unwrap();
    let status_name = |extra: &[&str], env: Option<&str>| -> (String, u32, u64) {
        let socket = work
            .path()
            .join(format!("s{}.sock", extra.len() + env.map_or(0, |_| 10)));
        let mut command = Command::new(lanspreadd());
        command
            .arg("--config")
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .args(extra);
        if let Some(name) = env {
            command.env("LANSPREAD_NAME", name);
        }
        let mut child = command.stderr(Stdio::null()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(child.try_wait().unwrap().is_none(), "lanspreadd exited");
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = stdout_json(&ctl_with(&socket, &["--json", "status"], None));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&socket).unwrap().permissions(),
        );
        let _ = child.kill();
        let _ = child.wait();
        (
            status["name"].as_str().unwrap().to_owned(),
            mode & 0o777,
            status["limits"]["upload"].as_u64().unwrap(),
        )
    };
    assert_eq!(
        status_name(&[], None),
        ("from-file".into(), 0o660, 10_000_000)
    );
    assert_eq!(status_name(&["--upload-limit", "1MiB"], None).2, 1 << 20);
    assert_eq!(status_name(&[], Some("from-env")).0, "from-env");
    assert_eq!(
        status_name(&["--name", "from-flag"], Some("from-env")).0,
        "from-flag"
    );

    // A rate without a unit stops the start with the file and key named.
    std::fs::write(&config, "upload-limit = \"100\"\n").unwrap();
    let output = Command::new(lanspreadd())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("upload-limit") && stderr.contains("80Mbit"),
        "{stderr}"
    );

    // A key the daemon does not know stops the start with the file named.
    std::fs::write(&config, "game-directory = \"/srv\"\n").unwrap();
    let output = Command::new(lanspreadd())
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("lanspreadd.toml") && stderr.contains("game-directory"),
        "{stderr}"
    );
}

#[test]
fn doctor_names_each_problem_and_its_fix() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    // Wait until the daemon has noticed that Avahi is missing here.
    let deadline = Instant::now() + Duration::from_secs(20);
    let checks = loop {
        let output = daemon.ctl(&["--json", "doctor"]);
        let checks: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let avahi = checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "avahi reachable")
            .cloned();
        if avahi.is_some_and(|a| a["verdict"] == "fail") {
            assert_eq!(output.status.code(), Some(1), "a failed check fails doctor");
            break checks;
        }
        assert!(
            Instant::now() < deadline,
            "doctor never saw Avahi missing: {checks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let verdict = |name: &str| {
        checks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == name)
            .unwrap_or_else(|| panic!("no {name} check"))
            .clone()
    };
    assert_eq!(verdict("daemon reachable")["verdict"], "ok");
    assert_eq!(verdict("permissions")["verdict"], "ok");
    assert_eq!(verdict("game directory")["verdict"], "ok");
    assert_eq!(verdict("peer transport")["verdict"], "ok");
    assert!(
        verdict("avahi reachable")["fix"]
            .as_str()
            .unwrap()
            .contains("avahi-daemon")
    );
    assert_eq!(verdict("peers answering")["verdict"], "warn");
    // The uncataloged folder of the sample library is named, with the fix.
    let ignored = verdict("ignored game folders");
    assert_eq!(ignored["verdict"], "warn");
    assert!(
        ignored["detail"]
            .as_str()
            .unwrap()
            .contains("not-in-catalog (not in the catalog)"),
        "{ignored}"
    );
    let fix = ignored["fix"].as_str().unwrap();
    assert!(
        fix.contains("(bundled)") && fix.contains(r#"{"id": "not-in-catalog""#),
        "{fix}"
    );
    let all = daemon.ctl(&["games", "--all"]);
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(
        text.contains("not-in-catalog  ignored  not in the catalog"),
        "{text}"
    );
    let human = daemon.ctl(&["doctor"]);
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("[FAIL] avahi reachable") && text.contains("fix:"),
        "{text}"
    );
    // Not reachable at all: exit 3, the first check says so.
    let nowhere = ctl_with(Path::new("/nonexistent/lanspread.sock"), &["doctor"], None);
    assert_eq!(nowhere.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&nowhere.stdout).contains("[FAIL] daemon reachable"));
}

/// Issue 14: archives with non-ASCII names (zip with and without the UTF-8
/// flag, tar with pax headers, 7z, RAR 5 and RAR 4 Unicode names) install
/// with their exact names and bytes whatever locale the daemon starts in:
/// no environment at all (`env -i`, as under a bare service manager) and
/// `LC_ALL=C`.
#[test]
fn non_ascii_archive_names_install_whatever_the_daemons_locale() {
    // (what the shell would say, LC_ALL and LANG after clearing everything)
    for (label, locale) in [("env -i", None), ("LC_ALL=C", Some("C"))] {
        let mut expected = Vec::new();
        let daemon = DaemonProcess::start_with(
            |games| {
                let root = games.join("openarena");
                write(&root.join("version.ini"), b"version=1.0\n");
                expected = common::archives::build_all(&root);
            },
            &[],
            |command| {
                command.env_clear();
                if let Some(locale) = locale {
                    command.env("LC_ALL", locale).env("LANG", locale);
                }
            },
        );
        let output = daemon.ctl(&["install", "openarena"]);
        assert!(
            output.status.success(),
            "{label}: install failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let local = daemon.game_dir.path().join("openarena/local");
        common::archives::assert_tree(&local, &expected);
        let (status, _) = daemon.terminate();
        assert!(status.success(), "{label}: {status}");
    }
}

/// Serving is polite: the QUIC server's threads run at nice 19 (and so,
/// with no I/O class of their own, at the lowest best-effort I/O
/// priority); the rest of the daemon keeps its normal priority.
#[test]
fn serving_threads_run_at_the_lowest_priority_and_the_rest_does_not() {
    let daemon = DaemonProcess::start(sample_library, &[]);
    let pid = daemon.child.id();
    // The peer runtime starts with the game directory, just after the socket.
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads = loop {
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
            let task = entry.unwrap().path();
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(task.join("comm")),
                std::fs::read_to_string(task.join("stat")),
            ) else {
                continue; // the thread ended meanwhile
            };
            // Field 19 is the nice value; the name before it may hold spaces.
            let after_name = &stat[stat.rfind(')').unwrap() + 2..];
            let nice: i32 = after_name.split(' ').nth(16).unwrap().parse().unwrap();
            let tid = task.file_name().unwrap().to_string_lossy().into_owned();
            threads.push((tid, comm.trim().to_owned(), nice));
        }
        if threads.iter().any(|(_, name, _)| name == "lanspread-serve") {
            break threads;
        }
        assert!(Instant::now() < deadline, "no serving thread: {threads:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // The daemon's own nice (tests may run under `nice`): every other
    // thread keeps it.
    let base = threads
        .iter()
        .find(|(_, name, _)| name == "lanspreadd")
        .map(|(_, _, nice)| *nice)
        .unwrap();
    assert!(base < 19, "run this test below nice 19");
    let ionice_of = |tid: &str| {
        let ionice = Command::new("ionice").args(["-p", tid]).output().unwrap();
        String::from_utf8_lossy(&ionice.stdout).trim().to_owned()
    };
    for (tid, name, nice) in &threads {
        let mut ionice = ionice_of(tid);
        if name == "lanspread-serve" {
            assert_eq!(*nice, 19, "{threads:?}");
            // A thread that just started sets its I/O class through an
            // `ionice` child process: give it a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while ionice != "best-effort: prio 7" && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                ionice = ionice_of(tid);
            }
            assert_eq!(ionice, "best-effort: prio 7", "serving thread {tid}");
        } else {
            assert_eq!(*nice, base, "{name} runs at nice {nice}: {threads:?}");
            assert!(ionice.starts_with("none"), "{name} {tid}: {ionice}");
        }
    }
    assert!(
        threads.iter().any(|(_, name, _)| name == "lanspreadd"),
        "{threads:?}"
    );
}
