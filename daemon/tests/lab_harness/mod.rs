//! The network lab from Rust: builds isolated hosts with `scripts/lab.sh`,
//! starts the real `lanspreadd` inside them (by pid, through `nsenter`),
//! drives each through the typed IPC client, and tears everything down on
//! drop, also when a test fails.

#![allow(dead_code)] // each lab test uses a different part

pub mod game;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use lanspread_proto::client::IpcClient;
use tempfile::TempDir;

/// Labs in one test binary run one at a time: two cores cannot carry
/// several labs of daemons without making the timings meaningless.
static LAB_LOCK: Mutex<()> = Mutex::new(());
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
static NEXT_LOG: AtomicU32 = AtomicU32::new(0);

/// Longest any lab script step may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab.sh")
}

/// A running lab; torn down when dropped.
pub struct Lab {
    id: String,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Lab {
    /// Builds `hosts` hosts. Root is required; its absence fails the test.
    pub fn up(hosts: usize) -> Self {
        Self::up_with(hosts, &[])
    }

    /// Builds `hosts` hosts, with avahi-daemon.conf options for some of
    /// them (`"h2:server.use-ipv4=no"`, see `lab.sh up --avahi`).
    pub fn up_with(hosts: usize, avahi: &[&str]) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the network lab needs root (CI runs as root); this test cannot run without it"
        );
        let serial = LAB_LOCK
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let id = format!(
            "{:x}{}",
            std::process::id() % 0xfff,
            NEXT_LAB.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Self {
            id,
            _serial: serial,
        };
        // A leftover from a crashed run with the same id goes first.
        lab.script(&["down"]);
        let hosts = hosts.to_string();
        let mut args = vec!["up", &hosts];
        for option in avahi {
            args.extend(["--avahi", option]);
        }
        let output = lab.script(&args);
        assert!(
            output.status.success(),
            "lab up failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        lab
    }

    fn script(&self, args: &[&str]) -> std::process::Output {
        let mut command = Command::new("timeout");
        command
            .arg(SCRIPT_TIMEOUT.as_secs().to_string())
            .arg(script())
            .args(args)
            .args(["--id", &self.id]);
        command.output().expect("lab.sh runs")
    }

    fn must(&self, args: &[&str]) {
        let output = self.script(args);
        assert!(
            output.status.success(),
            "lab.sh {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The lab address of host `hN`.
    pub fn address(host: &str) -> String {
        format!("10.77.0.{}", &host[1..])
    }

    pub fn cut(&self, host: &str) {
        self.must(&["cut", host]);
    }

    pub fn restore(&self, host: &str) {
        self.must(&["restore", host]);
    }

    pub fn restart_avahi(&self, host: &str) {
        self.must(&["avahi-restart", host]);
    }

    fn anchor_pid(&self, host: &str) -> String {
        let output = self.script(&["pid", host]);
        assert!(output.status.success(), "no host {host}");
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    }

    /// Bytes `host` has sent so far, read on the bridge side of its veth
    /// (what its link carried, framing included; independent of the
    /// daemons' own accounting).
    pub fn sent_bytes(&self, host: &str) -> u64 {
        self.veth_stats(host)["rx"]["bytes"]
            .as_u64()
            .expect("veth counters")
    }

    /// Bytes `host` has received so far, read on the bridge side of its
    /// veth (what its link carried toward it, framing included).
    pub fn received_bytes(&self, host: &str) -> u64 {
        self.veth_stats(host)["tx"]["bytes"]
            .as_u64()
            .expect("veth counters")
    }

    fn veth_stats(&self, host: &str) -> serde_json::Value {
        let output = Command::new("ip")
            .args([
                "-n",
                &format!("lsl-{}-br", self.id),
                "-s",
                "-j",
                "link",
                "show",
            ])
            .arg(format!("v{host}"))
            .output()
            .expect("ip runs");
        assert!(output.status.success(), "no veth for {host}");
        let links: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        links[0]["stats64"].clone()
    }

    /// Limits what `host` sends to `rate` (tc syntax, e.g. `100mbit`).
    pub fn shape(&self, host: &str, rate: &str) {
        self.must(&["shape", host, rate]);
    }

    /// Limits what `host` sends and what it receives, each to `rate`.
    pub fn shape_both(&self, host: &str, rate: &str) {
        self.must(&["shape2", host, rate]);
    }

    /// Runs `argv` inside `host` (its network and mount namespaces) and
    /// insists that it succeeds: nftables rules, mounts. Returns stdout.
    pub fn run(&self, host: &str, argv: &[&str]) -> String {
        let output = Command::new("nsenter")
            .args(["-t", &self.anchor_pid(host), "-n", "-m", "-u", "--"])
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter runs");
        assert!(
            output.status.success(),
            "{argv:?} in {host}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `lanspreadd` in `host` on a game directory prepared by
    /// `setup`.
    pub fn spawn_daemon(&self, host: &str, name: &str, setup: impl FnOnce(&Path)) -> LabDaemon {
        let work = tempfile::tempdir().unwrap();
        let games = work.path().join("games");
        std::fs::create_dir_all(&games).unwrap();
        setup(&games);
        self.spawn_in(host, name, work, &[])
    }

    /// Starts `lanspreadd` in `host` on an empty game directory, with
    /// extra environment (test fault switches).
    pub fn spawn_with_env(&self, host: &str, name: &str, env: &[(&str, &str)]) -> LabDaemon {
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.path().join("games")).unwrap();
        self.spawn_in(host, name, work, env)
    }

    /// Starts `lanspreadd` in `host` on an existing work dir (its games,
    /// state and socket), with extra environment (test fault switches).
    pub fn spawn_in(
        &self,
        host: &str,
        name: &str,
        work: TempDir,
        env: &[(&str, &str)],
    ) -> LabDaemon {
        self.spawn_with(host, name, work, env, false)
    }

    /// Starts `lanspreadd` in `host` on a game directory prepared by
    /// `setup`, through `env -i`: no environment at all but `env` (and
    /// `RUST_LOG`), as a bare service manager would start it.
    pub fn spawn_daemon_env_cleared(
        &self,
        host: &str,
        name: &str,
        setup: impl FnOnce(&Path),
        env: &[(&str, &str)],
    ) -> LabDaemon {
        let work = tempfile::tempdir().unwrap();
        let games = work.path().join("games");
        std::fs::create_dir_all(&games).unwrap();
        setup(&games);
        self.spawn_with(host, name, work, env, true)
    }

    fn spawn_with(
        &self,
        host: &str,
        name: &str,
        work: TempDir,
        env: &[(&str, &str)],
        clear_env: bool,
    ) -> LabDaemon {
        let games = work.path().join("games");
        let socket = work.path().join("lanspreadd.sock");
        let log = work.path().join(format!(
            "lanspreadd-{}.log",
            NEXT_LOG.fetch_add(1, Ordering::Relaxed)
        ));
        let started = Instant::now();
        let rust_log = "info,lanspreadd=debug";
        let mut command = Command::new("nsenter");
        command.args(["-t", &self.anchor_pid(host), "-n", "-m", "-u", "--"]);
        if clear_env {
            command.args(["env", "-i", &format!("RUST_LOG={rust_log}")]);
            command.args(env.iter().map(|(key, value)| format!("{key}={value}")));
        }
        let child = command
            .args(crate::common::daemon_args(
                &games,
                &work.path().join("state"),
                &socket,
            ))
            .args(["--name", name])
            .env("RUST_LOG", rust_log)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nsenter runs");
        let mut daemon = LabDaemon {
            child,
            socket,
            log,
            started,
            work,
        };
        daemon.wait_ready();
        daemon
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let output = self.script(&["down"]);
        if !output.status.success() {
            eprintln!(
                "lab down failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// A `lanspreadd` process inside a lab host; killed (by pid) on drop.
pub struct LabDaemon {
    child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
    /// When the process was spawned.
    pub started: Instant,
    work: TempDir,
}

impl LabDaemon {
    fn wait_ready(&mut self) {
        let log = self.log.clone();
        crate::common::wait_socket(&mut self.child, &self.socket, || {
            std::fs::read_to_string(&log).unwrap_or_default()
        });
    }

    pub async fn client(&self) -> IpcClient {
        IpcClient::connect(&self.socket)
            .await
            .expect("connect to lab daemon")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The game directory.
    pub fn games(&self) -> PathBuf {
        self.work.path().join("games")
    }

    /// Runs `lanspreadctl` against this daemon (from the test's namespace;
    /// the socket is a file).
    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(crate::common::lanspreadctl())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("lanspreadctl runs")
    }

    /// SIGTERMs the daemon, waits (at most 20 s) for it to exit, and hands
    /// back its exit status and work dir.
    pub fn terminate(mut self) -> (std::process::ExitStatus, TempDir) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the daemon");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "lanspreadd did not exit within 20 s of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let work = tempfile::tempdir().unwrap();
        (status, std::mem::replace(&mut self.work, work))
    }

    /// SIGKILLs the daemon and hands back its work dir (games, state), as a
    /// crash would leave them.
    pub fn kill_hard(mut self) -> TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let work = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.work, work)
    }
}

impl Drop for LabDaemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A failing test keeps every daemon's log (its work dir goes).
        if std::thread::panicking() {
            let kept = std::env::temp_dir().join("lanspread-lab-logs");
            let name = format!("{}.log", self.child.id());
            if std::fs::create_dir_all(&kept).is_ok()
                && std::fs::copy(&self.log, kept.join(&name)).is_ok()
            {
                eprintln!("daemon log kept: {}", kept.join(name).display());
            }
        }
    }
}
