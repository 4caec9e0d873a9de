//! The local game monitor (`docs/design.md#the-daemons-parts`): notices by
//! itself when games are added, removed, updated or installed by hand.
//!
//! A watcher thread (notify, behind [`ChangeSource`]) watches the game
//! directory and each game root, all non-recursively, and keeps those
//! watches in step with the disk (new roots, a deleted and recreated game
//! directory). A root the daemon itself is writing (a download, an
//! install, a verify: [`WatchTarget::busy`]) is not watched while it does:
//! every write would be an event (a download's are thousands per GiB) and
//! the operation's end rescans the game anyway; the watch comes back, with
//! a rescan of that root, once it ended. Its raw changes become per-id
//! rescan requests here, debounced so a long copy into a root yields one
//! rescan after the writes settle. The core decides whether a rescan runs
//! now or waits for an operation on that game to end. A full fallback
//! scan runs every [`FALLBACK_SCAN_INTERVAL`] to catch what events missed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lanspread_proto::model::GameId;
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::event_sender::EventSender;

/// A root is rescanned once no change was seen in it for this long.
pub const QUIET_PERIOD: Duration = Duration::from_millis(400);

/// Every this often, everything is rescanned, events or not.
pub const FALLBACK_SCAN_INTERVAL: Duration = Duration::from_secs(300);

/// While the game directory is missing (nothing to watch), how often the
/// watcher thread looks whether it is back.
const MISSING_DIR_POLL: Duration = Duration::from_secs(1);

/// While it is watched, how often the watcher thread checks its watches
/// against the disk anyway (events about the game directory itself make it
/// check at once; this only bounds what a lost event could cost).
const RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// What the monitor asks of the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MonitorEvent {
    /// A game root changed on disk and has been quiet since
    /// ([`QUIET_PERIOD`]): rescan it.
    RootChanged(GameId),
    /// Rescan everything (the fallback timer, or the game directory was
    /// (re)watched).
    FullRescan,
}

/// What the monitor watches: the game directory and each root in it,
/// except the `busy` ones (the core sets both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchTarget {
    pub game_dir: Option<PathBuf>,
    /// Roots an operation of the daemon is writing; not watched meanwhile.
    pub busy: BTreeSet<GameId>,
}

/// A change the watcher saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Something changed in (or of) this game root.
    Root(GameId),
    /// The game directory itself came back or was re-watched: rescan all.
    All,
}

/// A source of filesystem changes. The daemon uses [`NotifyWatcher`].
pub trait ChangeSource: Send + Sync + std::fmt::Debug {
    /// Starts watching what `target` says (and follows it when it
    /// changes) until `stop`, reporting to `changes`. Called from within
    /// the runtime.
    fn start(
        &self,
        target: watch::Receiver<WatchTarget>,
        changes: mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>>;
}

/// inotify (and the platform equivalents) through `notify`.
#[derive(Debug, Default)]
pub struct NotifyWatcher;

impl ChangeSource for NotifyWatcher {
    fn start(
        &self,
        target: watch::Receiver<WatchTarget>,
        changes: mpsc::UnboundedSender<Change>,
        stop: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        // The thread sleeps on one channel: filesystem events, and a wake-up
        // when the target changes or the monitor stops (a small task turns
        // those into messages), so it never polls.
        let (inbox, messages) = std::sync::mpsc::channel();
        let mut setting = target.clone();
        let (wake, stopping) = (inbox.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stopping.cancelled() => break,
                    changed = setting.changed() => if changed.is_err() { break },
                }
                if wake.send(Message::Wake).is_err() {
                    return;
                }
            }
            let _ = wake.send(Message::Wake);
        });
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || watch_thread(target, inbox, messages, &changes, &stop))
    }
}

/// What wakes the watcher thread.
enum Message {
    Fs(notify::Result<notify::Event>),
    /// The game directory setting changed, or the monitor stops.
    Wake,
}

/// What the watcher thread keeps between rounds.
struct Watches {
    watcher: notify::RecommendedWatcher,
    game_dir: Option<PathBuf>,
    /// Identity (device, inode) of the watched game directory.
    identity: Option<(u64, u64)>,
    /// The watched roots.
    roots: HashSet<PathBuf>,
    /// Roots not to watch (the target's `busy`).
    busy: BTreeSet<GameId>,
}

fn watch_thread(
    mut target: watch::Receiver<WatchTarget>,
    inbox: std::sync::mpsc::Sender<Message>,
    messages: std::sync::mpsc::Receiver<Message>,
    changes: &mpsc::UnboundedSender<Change>,
    stop: &CancellationToken,
) {
    // Reads (opens, closes after reading) change nothing: a seeder serving
    // files must not trigger rescans. They are dropped on notify's thread,
    // before they wake this one.
    let watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.as_ref().is_ok_and(is_read) {
            return;
        }
        let _ = inbox.send(Message::Fs(event));
    }) {
        Ok(watcher) => watcher,
        Err(err) => {
            tracing::error!(cause = %err, "cannot start the filesystem watcher; only the fallback scan will notice changes");
            return;
        }
    };
    let mut watches = Watches {
        watcher,
        game_dir: None,
        identity: None,
        roots: HashSet::new(),
        busy: BTreeSet::new(),
    };
    let initial = target.borrow_and_update().clone();
    watches.retarget(initial.game_dir);
    watches.busy = initial.busy;
    while !stop.is_cancelled() {
        if target.has_changed().unwrap_or(false) {
            let now = target.borrow_and_update().clone();
            if now.game_dir != watches.game_dir {
                watches.retarget(now.game_dir);
            }
            watches.busy = now.busy;
        }
        watches.resync(changes);
        let wait = if watches.identity.is_some() {
            RESYNC_INTERVAL
        } else {
            MISSING_DIR_POLL
        };
        let deadline = std::time::Instant::now() + wait;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match messages.recv_timeout(left) {
                Ok(Message::Fs(Ok(event))) => {
                    if watches.on_event(&event, changes) == Resync::Now {
                        break;
                    }
                }
                Ok(Message::Fs(Err(err))) => tracing::debug!(cause = %err, "watcher error"),
                Ok(Message::Wake) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Whether an event calls for checking the watches against the disk.
#[derive(Debug, PartialEq, Eq)]
enum Resync {
    Now,
    Later,
}

impl Watches {
    /// Moves every watch to a new game directory.
    fn retarget(&mut self, dir: Option<PathBuf>) {
        if let Some(old) = self.game_dir.take() {
            let _ = self.watcher.unwatch(&old);
        }
        for root in self.roots.drain() {
            let _ = self.watcher.unwatch(&root);
        }
        self.identity = None;
        self.game_dir = dir;
    }

    /// Whether `path`, an entry of `game_dir`, is a root to watch: it names
    /// a game, and no operation of the daemon writes it.
    fn wants(&self, game_dir: &Path, path: &Path) -> bool {
        root_id(game_dir, path).is_some_and(|id| !self.busy.contains(&id))
    }

    /// Brings the watches in line with the disk: the game directory (again,
    /// if it was deleted and recreated) and every root in it that is not
    /// busy.
    fn resync(&mut self, changes: &mpsc::UnboundedSender<Change>) {
        let Some(game_dir) = self.game_dir.clone() else {
            return;
        };
        let identity = dir_identity(&game_dir);
        if identity != self.identity {
            for root in self.roots.drain() {
                let _ = self.watcher.unwatch(&root);
            }
            let _ = self.watcher.unwatch(&game_dir);
            self.identity = None;
            if identity.is_some() {
                match self.watcher.watch(&game_dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        tracing::debug!(game_dir = %game_dir.display(), "watching the game directory");
                        self.identity = identity;
                        let _ = changes.send(Change::All);
                    }
                    Err(err) => {
                        tracing::warn!(game_dir = %game_dir.display(), cause = %err, "cannot watch the game directory")
                    }
                }
            }
        }
        if self.identity.is_none() {
            return;
        }
        let Ok(entries) = std::fs::read_dir(&game_dir) else {
            return;
        };
        let mut wanted = HashSet::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) && self.wants(&game_dir, &path) {
                wanted.insert(path);
            }
        }
        for gone in self.roots.difference(&wanted).cloned().collect::<Vec<_>>() {
            let _ = self.watcher.unwatch(&gone);
            self.roots.remove(&gone);
        }
        for new in wanted {
            if !self.roots.contains(&new)
                && self
                    .watcher
                    .watch(&new, RecursiveMode::NonRecursive)
                    .is_ok()
            {
                if let Some(id) = root_id(&game_dir, &new) {
                    // Anything written before the watch was in place (or
                    // while the root was busy).
                    let _ = changes.send(Change::Root(id));
                }
                self.roots.insert(new);
            }
        }
    }

    /// Reports the roots an event touched; an event about the game
    /// directory itself (deleted, moved) asks for a resync.
    fn on_event(
        &mut self,
        event: &notify::Event,
        changes: &mpsc::UnboundedSender<Change>,
    ) -> Resync {
        let Some(game_dir) = self.game_dir.clone() else {
            return Resync::Later;
        };
        if event.paths.is_empty() || event.paths.contains(&game_dir) {
            return Resync::Now;
        }
        for path in &event.paths {
            if let Some(id) = root_id(&game_dir, path) {
                let _ = changes.send(Change::Root(id));
            }
            // A new root: watch it right away, not at the next resync.
            if path.parent() == Some(&game_dir)
                && self.wants(&game_dir, path)
                && path.is_dir()
                && !self.roots.contains(path)
                && self
                    .watcher
                    .watch(path, RecursiveMode::NonRecursive)
                    .is_ok()
            {
                self.roots.insert(path.clone());
            }
        }
        Resync::Later
    }
}

/// Whether `event` only says something was read (opened, or closed after
/// reading): nothing changed.
fn is_read(event: &notify::Event) -> bool {
    matches!(event.kind, EventKind::Access(access)
        if access != notify::event::AccessKind::Close(notify::event::AccessMode::Write))
}

/// The game id of the root `path` lies in (or is).
fn root_id(game_dir: &Path, path: &Path) -> Option<GameId> {
    let relative = path.strip_prefix(game_dir).ok()?;
    let first = relative.components().next()?;
    GameId::new(first.as_os_str().to_str()?).ok()
}

#[cfg(unix)]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    dir.is_dir().then_some((0, 0))
}

/// The monitor task: debounces changes into per-id rescan requests for the
/// core, and asks for the fallback scan. Runs until `shutdown`, also when
/// the watcher could not start or stopped (then only the fallback scan
/// notices changes).
pub async fn run(
    source: Arc<dyn ChangeSource>,
    target: watch::Receiver<WatchTarget>,
    core: EventSender<MonitorEvent>,
    shutdown: CancellationToken,
) {
    let (tx, changes) = mpsc::unbounded_channel();
    let stop = shutdown.child_token();
    let thread = match source.start(target, tx, stop.clone()) {
        Ok(thread) => Some(thread),
        Err(err) => {
            tracing::error!(cause = %err, "cannot start the monitor thread; only the fallback scan will notice changes");
            None
        }
    };
    // `None` once the watcher is gone: its arm of the select is then
    // disabled, and the timers and shutdown go on.
    let mut changes = Some(changes);
    let mut pending: HashMap<GameId, Instant> = HashMap::new();
    let mut fallback = tokio::time::interval_at(
        Instant::now() + FALLBACK_SCAN_INTERVAL,
        FALLBACK_SCAN_INTERVAL,
    );
    loop {
        let next_due = pending.values().min().copied();
        tokio::select! {
            () = shutdown.cancelled() => break,
            change = recv(&mut changes), if changes.is_some() => match change {
                Some(Change::Root(id)) => {
                    pending.insert(id, Instant::now() + QUIET_PERIOD);
                }
                Some(Change::All) => {
                    pending.clear();
                    let _ = core.send(MonitorEvent::FullRescan).await;
                }
                None => {
                    tracing::warn!("the filesystem watcher stopped; only the fallback scan will notice changes");
                    changes = None;
                }
            },
            () = sleep_until(next_due) => {
                let now = Instant::now();
                let due: Vec<GameId> = pending
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    pending.remove(&id);
                    let _ = core.send(MonitorEvent::RootChanged(id)).await;
                }
            }
            _ = fallback.tick() => {
                let _ = core.send(MonitorEvent::FullRescan).await;
            }
        }
    }
    stop.cancel();
    if let Some(thread) = thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// The next change, or `None` when the watcher is gone (or never started).
async fn recv(changes: &mut Option<mpsc::UnboundedReceiver<Change>>) -> Option<Change> {
    match changes {
        Some(changes) => changes.recv().await,
        None => None,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A game id from a name known to be valid.
    pub(super) fn id(name: &str) -> GameId {
        GameId::new(name).unwrap()
    }

    #[test]
    fn paths_map_to_the_root_they_lie_in() {
        let dir = Path::new("/g");
        assert_eq!(
            root_id(dir, Path::new("/g/quake3/version.ini"))
                .unwrap()
                .as_str(),
            "quake3"
        );
        assert_eq!(
            root_id(dir, Path::new("/g/quake3")).unwrap().as_str(),
            "quake3"
        );
        assert_eq!(root_id(dir, Path::new("/g/Not Valid/x")), None);
        assert_eq!(root_id(dir, Path::new("/g")), None);
        assert_eq!(root_id(dir, Path::new("/elsewhere/x")), None);
    }
}

#[cfg(test)]
mod watch_tests {
    //! The notify watcher on a real directory.

    use super::tests::id;
    use super::*;

    /// Changes until `want` arrives (within five seconds); the ones before.
    async fn until(changes: &mut mpsc::UnboundedReceiver<Change>, want: Change) -> Vec<Change> {
        let mut before = Vec::new();
        loop {
            let change = tokio::time::timeout(Duration::from_secs(5), changes.recv())
                .await
                .unwrap_or_else(|_| panic!("no {want:?} within 5 s; saw {before:?}"))
                .expect("the watcher runs");
            if change == want {
                return before;
            }
            before.push(change);
        }
    }

    /// `library::open_beneath` opens no folder on the way for inotify: a
    /// watch on the root sees nothing of a file served from a folder in it,
    /// even before the monitor's own filter.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn opening_a_file_is_no_event_for_a_watch_on_the_folders_above_it() {
        use notify::Watcher as _;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("game");
        std::fs::create_dir_all(root.join("maps/q3dm17")).unwrap();
        std::fs::write(root.join("maps/q3dm17/map.bsp"), b"bsp").unwrap();
        let (tx, events) = std::sync::mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).unwrap();
        watcher
            .watch(&root, notify::RecursiveMode::NonRecursive)
            .unwrap();
        assert_eq!(
            std::io::read_to_string(
                crate::library::open_beneath(&root, "maps/q3dm17/map.bsp").unwrap()
            )
            .unwrap(),
            "bsp"
        );
        // A change after the open: every event of the open comes before it
        // (one inotify queue, in order).
        std::fs::write(root.join("marker"), b"").unwrap();
        let mut before = Vec::new();
        loop {
            let event = events
                .recv_timeout(std::time::Duration::from_secs(5))
                .expect("the marker's event within 5 s")
                .unwrap();
            if event.paths.contains(&root.join("marker")) {
                break;
            }
            before.push(event);
        }
        assert!(before.is_empty(), "the walk was seen: {before:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn files_read_in_a_root_are_no_change() {
        let dir = tempfile::tempdir().unwrap();
        for root in ["served", "other"] {
            std::fs::create_dir(dir.path().join(root)).unwrap();
        }
        std::fs::write(dir.path().join("served/pak0.eti"), [1u8; 4096]).unwrap();
        let (_target_tx, target) = watch::channel(WatchTarget {
            game_dir: Some(dir.path().to_owned()),
            busy: BTreeSet::new(),
        });
        let (tx, mut changes) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let thread = NotifyWatcher.start(target, tx, stop.clone()).unwrap();
        // Both roots are watched (in either order).
        let first = until(&mut changes, Change::Root(id("served"))).await;
        if !first.contains(&Change::Root(id("other"))) {
            until(&mut changes, Change::Root(id("other"))).await;
        }

        // Served (opened, read, closed), then a change elsewhere.
        for _ in 0..3 {
            assert_eq!(
                std::fs::read(dir.path().join("served/pak0.eti"))
                    .unwrap()
                    .len(),
                4096
            );
        }
        std::fs::write(dir.path().join("other/pak0.eti"), [2u8; 4096]).unwrap();
        let before = until(&mut changes, Change::Root(id("other"))).await;
        assert!(
            !before.contains(&Change::Root(id("served"))),
            "reading was a change: {before:?}"
        );

        stop.cancel();
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_root_is_not_watched_until_its_operation_ends() {
        let dir = tempfile::tempdir().unwrap();
        for root in ["busy", "calm"] {
            std::fs::create_dir(dir.path().join(root)).unwrap();
        }
        let (target_tx, target) = watch::channel(WatchTarget {
            game_dir: Some(dir.path().to_owned()),
            busy: [id("busy")].into(),
        });
        let (tx, mut changes) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let thread = NotifyWatcher.start(target, tx, stop.clone()).unwrap();
        until(&mut changes, Change::Root(id("calm"))).await;

        // The daemon's own writes into the busy root are not seen; the same
        // writes into a watched root are (one inotify queue, in order).
        std::fs::write(dir.path().join("busy/pak0.eti"), [1u8; 4096]).unwrap();
        std::fs::write(dir.path().join("calm/pak0.eti"), [1u8; 4096]).unwrap();
        let before = until(&mut changes, Change::Root(id("calm"))).await;
        assert!(
            !before.contains(&Change::Root(id("busy"))),
            "a busy root was watched: {before:?}"
        );

        // The operation ended: watched again, and rescanned for what was
        // written meanwhile.
        target_tx.send_modify(|target| target.busy.clear());
        until(&mut changes, Change::Root(id("busy"))).await;
        std::fs::write(dir.path().join("busy/pak1.eti"), [2u8; 4096]).unwrap();
        until(&mut changes, Change::Root(id("busy"))).await;

        stop.cancel();
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap()
            .unwrap();
    }
}

#[cfg(test)]
mod run_tests {
    //! The debounce, fallback and shutdown logic under paused time, through
    //! the [`ChangeSource`] seam.

    use super::tests::id;
    use super::*;

    /// A change source whose changes the test sends by hand, or that cannot
    /// start at all (an exhausted inotify limit).
    #[derive(Debug, Default)]
    struct Scripted {
        broken: bool,
        changes: std::sync::Mutex<Option<mpsc::UnboundedSender<Change>>>,
    }

    impl ChangeSource for Scripted {
        fn start(
            &self,
            _target: watch::Receiver<WatchTarget>,
            changes: mpsc::UnboundedSender<Change>,
            _stop: CancellationToken,
        ) -> std::io::Result<std::thread::JoinHandle<()>> {
            if self.broken {
                return Err(std::io::Error::other("inotify instance limit reached"));
            }
            *self.changes.lock().unwrap() = Some(changes);
            Ok(std::thread::spawn(|| {}))
        }
    }

    struct Running {
        source: Arc<Scripted>,
        events: mpsc::Receiver<MonitorEvent>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        _target: watch::Sender<WatchTarget>,
    }

    async fn start(source: Scripted) -> Running {
        let source = Arc::new(source);
        let (target_tx, target) = watch::channel(WatchTarget::default());
        let (core, events) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&source) as Arc<dyn ChangeSource>,
            target,
            EventSender::new(core),
            shutdown.clone(),
        ));
        tokio::task::yield_now().await;
        Running {
            source,
            events,
            shutdown,
            task,
            _target: target_tx,
        }
    }

    impl Running {
        fn change(&self, change: Change) {
            let changes = self.source.changes.lock().unwrap();
            changes.as_ref().unwrap().send(change).unwrap();
        }

        async fn stop(self) {
            self.shutdown.cancel();
            tokio::time::timeout(Duration::from_secs(1), self.task)
                .await
                .expect("the monitor stops on shutdown")
                .unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_watcher_the_fallback_scan_still_runs_and_shutdown_works() {
        let mut monitor = start(Scripted {
            broken: true,
            ..Scripted::default()
        })
        .await;
        let started = Instant::now();
        for round in 1..=2u32 {
            let event = tokio::time::timeout(FALLBACK_SCAN_INTERVAL * 2, monitor.events.recv())
                .await
                .expect("the fallback scan runs without a watcher");
            assert_eq!(event, Some(MonitorEvent::FullRescan));
            assert_eq!(started.elapsed(), FALLBACK_SCAN_INTERVAL * round);
        }
        monitor.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_watcher_that_stops_leaves_the_fallback_scan_and_shutdown_working() {
        let mut monitor = start(Scripted::default()).await;
        // The watcher thread ends: its sender goes.
        monitor.source.changes.lock().unwrap().take();
        let event = tokio::time::timeout(FALLBACK_SCAN_INTERVAL * 2, monitor.events.recv())
            .await
            .expect("the fallback scan runs after the watcher stopped");
        assert_eq!(event, Some(MonitorEvent::FullRescan));
        monitor.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_copy_gives_one_rescan_once_the_root_is_quiet() {
        let mut monitor = start(Scripted::default()).await;
        let started = Instant::now();
        // 60 writes 50 ms apart into one root, one write into another.
        monitor.change(Change::Root(id("other")));
        for _ in 0..60 {
            monitor.change(Change::Root(id("big")));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let last_write = started + Duration::from_millis(50 * 59);
        let first = monitor.events.recv().await.unwrap();
        assert_eq!(first, MonitorEvent::RootChanged(id("other")));
        let second = monitor.events.recv().await.unwrap();
        assert_eq!(second, MonitorEvent::RootChanged(id("big")));
        assert_eq!(Instant::now(), last_write + QUIET_PERIOD);
        // Nothing more until the fallback scan.
        let next = monitor.events.recv().await.unwrap();
        assert_eq!(next, MonitorEvent::FullRescan);
        assert_eq!(Instant::now(), started + FALLBACK_SCAN_INTERVAL);
        monitor.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_rewatch_drops_pending_roots_for_one_full_rescan() {
        let mut monitor = start(Scripted::default()).await;
        monitor.change(Change::Root(id("a")));
        monitor.change(Change::All);
        assert_eq!(monitor.events.recv().await, Some(MonitorEvent::FullRescan));
        let next = tokio::time::timeout(QUIET_PERIOD * 4, monitor.events.recv()).await;
        assert!(next.is_err(), "a root rescan after the full one: {next:?}");
        monitor.stop().await;
    }
}
