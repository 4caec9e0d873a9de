//! The crash matrix: the real daemon is killed (abort, via the test-only
//! `LANSPREAD_TEST_CRASH_AT` switch of the `test-faults` feature) between
//! each pair of steps of install, update and uninstall; after a restart,
//! recovery must leave the old complete `local/` or the new complete one —
//! never a mix, never a leftover reserved folder or intent log, never a
//! deleted folder that lanspread did not create.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{daemon_args, make_zip, wait_socket, write};
use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::PeerCommand;
use lanspread_proto::model::GameId;

/// What `local/` must hold after recovery.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    NotInstalled,
    Old,
    New,
}

fn spawn(work: &Path, crash_at: Option<&str>) -> (Child, PathBuf) {
    let socket = work.join("s.sock");
    let args = daemon_args(&work.join("games"), &work.join("state"), &socket);
    let mut command = Command::new(&args[0]);
    command
        .args(&args[1..])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(step) = crash_at {
        command.env("LANSPREAD_TEST_CRASH_AT", step);
    }
    let mut child = command.spawn().unwrap();
    wait_socket(&mut child, &socket, String::new);
    (child, socket)
}

fn wait_exit(child: &mut Child, step: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the daemon never reached {step}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn local_content(root: &Path) -> Option<Vec<u8>> {
    std::fs::read(root.join("local/bin/game")).ok()
}

async fn crash_and_recover(step: &str, installed_before: bool, uninstall: bool, expect: Expect) {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("games/openarena");
    write(&root.join("version.ini"), b"2");
    write(&root.join("mods/user-made.txt"), b"not lanspread's");
    make_zip(
        &root.join("game.zip"),
        &[("bin/game", b"new"), ("data/new-only", b"n")],
    );
    if installed_before {
        write(&root.join("local/bin/game"), b"old");
        write(&root.join("local/data/old-only"), b"o");
    }
    let (mut child, socket) = spawn(work.path(), Some(step));
    let mut client = IpcClient::connect(&socket).await.unwrap();
    let id = GameId::new("openarena").unwrap();
    let command = if uninstall {
        PeerCommand::UninstallGame { id }
    } else {
        PeerCommand::InstallGame { id }
    };
    // The reply may or may not arrive before the crash.
    let _ = client.request(command).await;
    wait_exit(&mut child, step);

    // Restart: recovery runs before the socket opens.
    let (mut restarted, _) = spawn(work.path(), None);
    let content = local_content(&root);
    let mut names: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let _ = restarted.kill();
    let _ = restarted.wait();

    match expect {
        Expect::NotInstalled => assert_eq!(content, None, "{step}: local/ must be gone"),
        Expect::Old => {
            assert_eq!(content.as_deref(), Some(&b"old"[..]), "{step}");
            assert!(
                root.join("local/data/old-only").exists(),
                "{step}: old local/ incomplete"
            );
            assert!(
                !root.join("local/data/new-only").exists(),
                "{step}: a mix of old and new"
            );
        }
        Expect::New => {
            assert_eq!(content.as_deref(), Some(&b"new"[..]), "{step}");
            assert!(
                root.join("local/data/new-only").exists(),
                "{step}: new local/ incomplete"
            );
            assert!(
                !root.join("local/data/old-only").exists(),
                "{step}: a mix of old and new"
            );
            assert!(
                !root.join("local/.lanspread_owned").exists(),
                "{step}: marker left in local/"
            );
        }
    }
    let mut expected = vec!["game.zip", "mods", "version.ini"];
    if expect != Expect::NotInstalled {
        expected.insert(1, "local");
    }
    assert_eq!(names, expected, "{step}: leftovers after recovery");
    assert_eq!(
        std::fs::read(root.join("mods/user-made.txt")).unwrap(),
        b"not lanspread's",
        "{step}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_every_step_recovers_to_old_or_new_never_a_mix() {
    use Expect::*;
    let matrix: [(&str, bool, bool, Expect); 13] = [
        ("install:extracting", false, false, NotInstalled),
        ("install:extracted", false, false, NotInstalled),
        ("install:activating", false, false, New),
        ("install:activated", false, false, New),
        ("update:extracting", true, false, Old),
        ("update:extracted", true, false, Old),
        ("update:swapping", true, false, New),
        ("update:backed-up", true, false, New),
        ("update:swapped", true, false, New),
        ("update:cleaned", true, false, New),
        ("uninstall:removing", true, true, NotInstalled),
        ("uninstall:backed-up", true, true, NotInstalled),
        ("uninstall:removed", true, true, NotInstalled),
    ];
    for (step, installed, uninstall, expect) in matrix {
        crash_and_recover(step, installed, uninstall, expect).await;
    }
}
