//! Test harness: a daemon in this process (driven through the typed
//! client), sample game directories, and raw socket access for bad input.

#![allow(dead_code)] // each test binary uses a different part

pub mod archives;
pub mod many_files;

use std::path::{Path, PathBuf};
use std::time::Duration;

use interprocess::local_socket::tokio::{Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lanspread_proto::client::IpcClient;
use lanspread_proto::ipc::{EventMessage, PeerEvent};
use lanspreadd::catalog::Catalog;
use lanspreadd::discovery::{Announcement, DiscoveryBackend, DiscoveryEvent, Emit};
use lanspreadd::runtime::PeerRuntimeConfig;
use lanspreadd::transport::TlsIdentity;
use lanspreadd::{Config, DEFAULT_SOCKET_MODE, StartError};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait in these tests.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A catalog with three games, one of which the sample library lacks.
pub fn test_catalog() -> Catalog {
    Catalog::parse(
        r#"[{"id":"openarena","name":"OpenArena"},
            {"id":"quake3","name":"Quake III Arena"},
            {"id":"teeworlds","name":"Teeworlds"}]"#,
        "test",
    )
    .unwrap()
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A sample library: openarena 0.8.8 downloaded and installed (1500 served
/// bytes + version.ini), quake3 downloaded only, one uncataloged root.
pub fn sample_library(dir: &Path) {
    write(&dir.join("openarena/version.ini"), b"version=0.8.8\n");
    write(&dir.join("openarena/pak0.eti"), &[7; 1000]);
    write(&dir.join("openarena/maps/dm1.eti"), &[8; 500]);
    write(&dir.join("openarena/local/openarena.x86_64"), &[9; 100]);
    write(&dir.join("quake3/version.ini"), b"1.32c");
    write(&dir.join("quake3/baseq3/pak0.pk3"), &[1; 2000]);
    write(&dir.join("not-in-catalog/version.ini"), b"1");
}

/// A daemon running in this process on temp dirs.
#[derive(Debug)]
pub struct TestDaemon {
    pub socket: PathBuf,
    pub game_dir: TempDir,
    pub state_dir: TempDir,
    socket_dir: TempDir,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), StartError>>,
}

impl TestDaemon {
    /// Starts a daemon on a game directory prepared by `setup`, alone on
    /// its own in-memory LAN.
    pub async fn start(setup: impl FnOnce(&Path)) -> Self {
        Self::start_on(&MemoryLan::default(), setup).await
    }

    /// Starts a daemon that finds the other daemons of `lan`.
    pub async fn start_on(lan: &MemoryLan, setup: impl FnOnce(&Path)) -> Self {
        Self::start_with(lan, setup, |_| {}).await
    }

    /// Starts a daemon with its configuration adjusted by `tweak`.
    pub async fn start_with(
        lan: &MemoryLan,
        setup: impl FnOnce(&Path),
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let game_dir = tempfile::tempdir().unwrap();
        setup(game_dir.path());
        let state_dir = tempfile::tempdir().unwrap();
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir.path().join("lanspreadd.sock");
        let mut config = test_config(Some(game_dir.path().to_owned()), state_dir.path(), &socket);
        config.peer_runtime.discovery = Arc::new(lan.clone());
        tweak(&mut config);
        let (shutdown, task) = spawn_daemon(config).await;
        Self {
            socket,
            game_dir,
            state_dir,
            socket_dir,
            shutdown,
            task,
        }
    }

    pub async fn client(&self) -> IpcClient {
        tokio::time::timeout(TIMEOUT, IpcClient::connect(&self.socket))
            .await
            .expect("connect in time")
            .expect("connect")
    }

    /// Stops the daemon (as SIGTERM would) and returns its result.
    pub async fn stop(self) -> (Result<(), StartError>, TempDir, TempDir) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("daemon stops in time")
            .expect("daemon task does not panic");
        (result, self.game_dir, self.state_dir)
    }
}

pub fn test_config(game_dir: Option<PathBuf>, state_dir: &Path, socket: &Path) -> Config {
    Config {
        game_dir,
        state_dir: state_dir.to_owned(),
        socket: socket.to_owned(),
        socket_mode: DEFAULT_SOCKET_MODE,
        catalog: test_catalog(),
        name: "test-daemon".into(),
        operator_group: None,
        peer_runtime: PeerRuntimeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: TlsIdentity::compiled_in(),
            discovery: Arc::new(MemoryLan::default()),
            limits: Default::default(),
        },
        unpacker: Arc::new(lanspreadd::install::LibarchiveUnpacker),
        change_source: Arc::new(lanspreadd::monitor::NotifyWatcher),
    }
}

/// An in-memory stand-in for mDNS: every daemon started on the same
/// `MemoryLan` finds the others at 127.0.0.1 and their QUIC port. Used
/// through the daemon's discovery seam; the lab tests use real mDNS.
#[derive(Clone, Debug, Default)]
pub struct MemoryLan {
    announced: Arc<Mutex<Vec<Announcement>>>,
    /// Addresses every peer is also announced at, ahead of its real one.
    decoys: Arc<Mutex<Vec<std::net::SocketAddr>>>,
}

impl MemoryLan {
    /// From now on, every peer is also announced at `addr` (first), as a
    /// host with several interfaces would be.
    pub fn add_decoy(&self, addr: std::net::SocketAddr) {
        self.decoys.lock().unwrap().push(addr);
    }

    /// Announces a peer that is not a daemon of ours (a test double).
    pub fn announce(&self, announcement: Announcement) {
        self.announced.lock().unwrap().push(announcement);
    }
}

impl DiscoveryBackend for MemoryLan {
    fn start(
        &self,
        announcement: Announcement,
        emit: Emit,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let announced = Arc::clone(&self.announced);
        let decoys = Arc::clone(&self.decoys);
        announced.lock().unwrap().push(announcement.clone());
        std::thread::Builder::new()
            .name("memory-lan".into())
            .spawn(move || {
                emit(DiscoveryEvent::Running);
                let mut seen = HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let others: Vec<_> = announced
                        .lock()
                        .unwrap()
                        .iter()
                        .filter(|a| a.peer_id != announcement.peer_id)
                        .cloned()
                        .collect();
                    for other in others {
                        if seen.insert(other.peer_id.clone()) {
                            emit(DiscoveryEvent::Found {
                                peer_id: other.peer_id,
                                name: other.name,
                                addrs: decoys
                                    .lock()
                                    .unwrap()
                                    .iter()
                                    .copied()
                                    .chain([([127, 0, 0, 1], other.listen.port()).into()])
                                    .collect(),
                            });
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                announced
                    .lock()
                    .unwrap()
                    .retain(|a| a.peer_id != announcement.peer_id);
            })
    }
}

/// Reads events until one matches `want`, or fails after `timeout`.
pub async fn wait_for_event(
    client: &mut IpcClient,
    timeout: Duration,
    what: &str,
    mut want: impl FnMut(&PeerEvent) -> bool,
) -> EventMessage {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {timeout:?}"))
            .expect("event stream");
        if want(&event.event) {
            return event;
        }
    }
}

/// Starts `run(config)` and waits until its socket is ready (or it failed).
pub async fn spawn_daemon(
    config: Config,
) -> (CancellationToken, JoinHandle<Result<(), StartError>>) {
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(lanspreadd::run(config, shutdown.clone(), move || {
        let _ = ready_tx.send(());
    }));
    // Either ready, or the task ended (start error) and dropped the sender.
    let _ = tokio::time::timeout(TIMEOUT, ready_rx)
        .await
        .expect("daemon starts in time");
    (shutdown, task)
}

/// A raw connection for sending lines the typed client would never send.
pub struct RawClient {
    reader: BufReader<Stream>,
}

impl RawClient {
    /// Connects and consumes the hello line.
    pub async fn connect(socket: &Path) -> Self {
        let name = socket.to_fs_name::<GenericFilePath>().unwrap();
        let stream = Stream::connect(name).await.unwrap();
        let mut raw = Self {
            reader: BufReader::new(stream),
        };
        let hello = raw.read_json().await.expect("hello");
        assert_eq!(hello["kind"], "hello");
        raw
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).await.unwrap();
    }

    /// The next line as JSON; `None` at EOF.
    pub async fn read_json(&mut self) -> Option<serde_json::Value> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("line in time")
            .ok()?;
        (n > 0).then(|| serde_json::from_str(&line).expect("daemon lines are JSON"))
    }

    pub fn into_stream(self) -> Stream {
        self.reader.into_inner()
    }
}

/// `lanspreadctl`, built (once per test binary) from the workspace, so a
/// stale binary from an earlier build is never what gets tested.
pub fn lanspreadctl() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let daemon = PathBuf::from(env!("CARGO_BIN_EXE_lanspreadd"));
            let profile_dir = daemon.parent().unwrap().to_owned();
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo
                .args(["build", "--quiet", "-p", "lanspreadctl"])
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if profile_dir.ends_with("release") {
                cargo.arg("--release");
            }
            let status = cargo.status().expect("cargo runs");
            assert!(status.success(), "building lanspreadctl failed");
            let path = profile_dir.join("lanspreadctl");
            assert!(
                path.exists(),
                "{} is missing after the build",
                path.display()
            );
            path
        })
        .clone()
}

/// Builds a zip at `path` with `files` (name, content), using Python's
/// zipfile (CPython is on every machine of this kind).
pub fn make_zip(path: &Path, files: &[(&str, &[u8])]) {
    let mut script = String::from(
        "import zipfile, sys\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n",
    );
    for (name, content) in files {
        let bytes: Vec<String> = content.iter().map(|b| b.to_string()).collect();
        script.push_str(&format!(
            "z.writestr({name:?}, bytes([{}]))\n",
            bytes.join(",")
        ));
    }
    script.push_str("z.close()\n");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "building {} failed", path.display());
}

/// Builds a zip of one file of `size` zero bytes (compresses to almost
/// nothing; expands to `size`).
pub fn make_zero_zip(path: &Path, name: &str, size: u64) {
    let script = format!(
        "import zipfile, sys\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\nz.writestr({name:?}, bytes({size}))\nz.close()\n"
    );
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "building {} failed", path.display());
}

/// Waits until the daemon behind `client` has at least `peers` connected
/// peers, or fails after `timeout`.
pub async fn wait_peer_count(client: &mut IpcClient, peers: u32, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while client.peer_count().await.unwrap() < peers {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {peers} peers connected within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The arguments every test gives the real `lanspreadd` binary; the caller
/// adds its own (and may wrap the binary, as the lab does with nsenter).
pub fn daemon_args(game_dir: &Path, state_dir: &Path, socket: &Path) -> Vec<std::ffi::OsString> {
    vec![
        env!("CARGO_BIN_EXE_lanspreadd").into(),
        "--game-dir".into(),
        game_dir.into(),
        "--state-dir".into(),
        state_dir.into(),
        "--socket".into(),
        socket.into(),
    ]
}

/// Waits (at most 20 s) until a spawned daemon's `socket` accepts
/// connections; fails with `log()` if the process exits first.
pub fn wait_socket(child: &mut std::process::Child, socket: &Path, log: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lanspreadd exited during start ({status}):\n{}", log());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "lanspreadd did not open its socket within 20 s:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GetGame` until `peers` peers served the file list (a peer that just
/// started may still be preparing it, and `GetGame` does not wait for a
/// second peer once one answered); at most 20 s.
pub async fn get_game_from(
    client: &mut IpcClient,
    id: &lanspread_proto::model::GameId,
    peers: u32,
) -> lanspread_proto::ipc::GameFilesResult {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let files = client.get_game(id).await.unwrap();
        if files.peers >= peers {
            return files;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {peers} peers served the file list of {id}",
            files.peers
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
