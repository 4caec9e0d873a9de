//! Test harness: a daemon in this process (driven through the typed
//! client), sample game directories, and raw socket access for bad input.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::time::Duration;

use interprocess::local_socket::tokio::{Stream, prelude::*};
use interprocess::local_socket::{GenericFilePath, ToFsName};
use lanspread_proto::client::IpcClient;
use lanspreadd::catalog::Catalog;
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
    /// Starts a daemon on a game directory prepared by `setup`.
    pub async fn start(setup: impl FnOnce(&Path)) -> Self {
        let game_dir = tempfile::tempdir().unwrap();
        setup(game_dir.path());
        let state_dir = tempfile::tempdir().unwrap();
        let socket_dir = tempfile::tempdir().unwrap();
        let socket = socket_dir.path().join("lanspreadd.sock");
        let config = test_config(Some(game_dir.path().to_owned()), state_dir.path(), &socket);
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
