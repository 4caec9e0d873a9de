//! Discovery: announce this daemon and find the others with mDNS
//! (`_lanspread._udp`; the record is described in docs/ipc.md, "Discovery").
//!
//! The only module that knows zeroconf. Avahi's client is not thread-safe
//! and its event loops block, so each session owns two threads: this one
//! runs the browser's loop, a scoped helper the service's, each blocking
//! until Avahi has something for it. Results go out through a callback.
//! mDNS is a hint: liveness comes from pings, not from here. When Avahi
//! goes away (or restarts) the session ends and starts over with backoff,
//! saying so through [`DiscoveryEvent::Failed`]; a record that fails to
//! resolve concerns that one peer and is only logged.
//!
//! Avahi resolves a browsed service with whichever address record answers
//! first, often a peer's IPv6 link-local address (which zeroconf hands
//! over without its scope id, so it cannot be dialled). The TXT record
//! therefore carries the daemon's own dialable addresses ([`TXT_ADDRS`]):
//! any resolution, of any address family, yields them.

mod addresses;
mod peers;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lanspread_proto::wire::WIRE_VERSION;
use zeroconf::prelude::*;
use zeroconf::{BrowserEvent, EventLoop, MdnsBrowser, MdnsService, ServiceType, TxtRecord};

use addresses::{format_txt_addrs, own_addrs};
use peers::{Peers, Txt};

/// TXT key holding the peer id.
pub const TXT_PEER_ID: &str = "peer_id";
/// TXT key holding the wire version.
pub const TXT_WIRE: &str = "wire";
/// TXT key holding the addresses this daemon can be dialled at,
/// comma-separated (the port is the service's).
pub const TXT_ADDRS: &str = "addrs";

/// How long one wait of an Avahi loop may last. An event ends the wait at
/// once, so this is not a delay: it bounds how long a stop request waits
/// and sets the idle wake-up rate (two loops: 8 wake-ups a second).
const POLL_TIMEOUT: Duration = Duration::from_millis(250);

/// How often the announced addresses are compared with the host's; a
/// change (DHCP, a new interface) announces the service again.
const ADDRESS_CHECK_INTERVAL: Duration = Duration::from_secs(10);

/// Pause between withdrawing the service and registering it again with
/// new addresses. A withdrawn record stays in other hosts' caches for 1 s
/// (the mDNS goodbye); registered again sooner, it merely refreshes them,
/// their browsers see no change and never resolve the new TXT record.
const REANNOUNCE_PAUSE: Duration = Duration::from_secs(2);

/// First wait before retrying after Avahi failed, doubled up to
/// [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// What this daemon announces.
#[derive(Clone, Debug)]
pub struct Announcement {
    pub peer_id: String,
    /// Human name; the mDNS instance name adds a short peer id suffix so
    /// two daemons with one host name do not collide.
    pub name: String,
    /// Where the QUIC server listens: its port is announced, and its
    /// address (or, for an unspecified one, the host's addresses) goes
    /// into the TXT record.
    pub listen: SocketAddr,
}

/// What discovery reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// Announcing and browsing (first start, or recovered after a failure).
    Running,
    /// Avahi is unreachable or failed; retrying after `retry_in`.
    Failed { reason: String, retry_in: Duration },
    /// A peer (never this daemon) and every address it may be dialled at,
    /// best first; sent again when the addresses change.
    Found {
        peer_id: String,
        name: String,
        addrs: Vec<SocketAddr>,
    },
    /// A peer's mDNS records all went away (a hint; pings decide liveness).
    Gone { peer_id: String },
    /// This daemon's own record came back through the browser: it is
    /// visible on the network.
    SelfVisible,
}

/// Where discovery events go.
pub type Emit = Box<dyn Fn(DiscoveryEvent) + Send>;

/// A way to find peers. The daemon uses [`Zeroconf`]; tests plug in an
/// in-memory one. This is a seam for tests, not a manual-connect path: the
/// binary has no way to choose another backend.
pub trait DiscoveryBackend: Send + Sync + std::fmt::Debug {
    /// Starts announcing and browsing on a thread of its own, until `stop`
    /// is set.
    fn start(
        &self,
        announcement: Announcement,
        emit: Emit,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>>;
}

/// mDNS through the platform's zeroconf daemon (Avahi, Bonjour).
#[derive(Debug, Default)]
pub struct Zeroconf;

impl DiscoveryBackend for Zeroconf {
    fn start(
        &self,
        announcement: Announcement,
        emit: Emit,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("discovery".into())
            .spawn(move || run(&announcement, &*emit, &stop))
    }
}

/// Sessions with Avahi, restarted with backoff until `stop`.
fn run(announcement: &Announcement, emit: &dyn Fn(DiscoveryEvent), stop: &AtomicBool) {
    let mut backoff = INITIAL_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        match session(announcement, emit, stop) {
            Ok(()) => break,
            Err(failure) => {
                if failure.was_running {
                    backoff = INITIAL_BACKOFF;
                }
                tracing::warn!(reason = %failure.reason, retry_in = ?backoff, "mdns discovery failed");
                emit(DiscoveryEvent::Failed {
                    reason: failure.reason,
                    retry_in: backoff,
                });
                sleep_unless_stopped(backoff, stop);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::debug!("mdns discovery stopped");
}

/// Why a session ended.
struct Failure {
    reason: String,
    /// The session had reached `Running` before it failed.
    was_running: bool,
}

fn service_type() -> Result<ServiceType, String> {
    ServiceType::new("lanspread", "udp").map_err(|err| format!("service type: {err}"))
}

fn avahi_error(what: &str, err: &zeroconf::error::Error) -> String {
    format!("{what}: {err} (is avahi-daemon running and reachable over D-Bus?)")
}

/// One registration + browse, each loop on its own thread, until one
/// fails or `stop` is set.
fn session(
    announcement: &Announcement,
    emit: &dyn Fn(DiscoveryEvent),
    stop: &AtomicBool,
) -> Result<(), Failure> {
    let fail = |reason: String| Failure {
        reason,
        was_running: false,
    };
    let mut announcer =
        Announcer::register(announcement, own_addrs(announcement.listen)).map_err(fail)?;
    let (tx, browsed) = mpsc::channel();
    let mut browser = MdnsBrowser::new(service_type().map_err(fail)?);
    browser.set_service_callback(Box::new(move |result, _| {
        let _ = tx.send(result);
    }));
    let browser_loop = browser
        .browse_services()
        .map_err(|err| fail(avahi_error("cannot browse mDNS services", &err)))?;

    emit(DiscoveryEvent::Running);
    tracing::info!(port = announcement.listen.port(), addrs = ?announcer.addrs, "mdns discovery running");
    // Set by whichever side ends first, so the other one ends too.
    let ended = AtomicBool::new(false);
    let result = std::thread::scope(|scope| {
        let announcing = std::thread::Builder::new()
            .name("mdns-announce".into())
            .spawn_scoped(scope, || {
                let result = announcer.run(announcement, stop, &ended);
                ended.store(true, Ordering::Relaxed);
                result
            });
        let (browsing, announced) = match announcing {
            Ok(thread) => {
                let browsing = browse(announcement, &browser_loop, &browsed, emit, stop, &ended);
                ended.store(true, Ordering::Relaxed);
                let announced = thread
                    .join()
                    .unwrap_or_else(|_| Err("the mdns announcing thread panicked".into()));
                (browsing, announced)
            }
            Err(err) => (
                Err(format!("cannot start the mdns announcing thread: {err}")),
                Ok(()),
            ),
        };
        browsing.and(announced)
    });
    drop(browser);
    result.map_err(|reason| Failure {
        reason,
        was_running: true,
    })
}

/// `<name> (<first 6 hex digits of the peer id>-<port>)`: two daemons with
/// one host name do not collide, and a daemon restarted on a new port is
/// a new instance. Under the old name, registered again within the 1 s a
/// withdrawn record stays cached elsewhere, it would only refresh other
/// hosts' caches: their browsers would report nothing, never resolve the
/// new port, and keep pinging the old one.
fn instance_name(announcement: &Announcement) -> String {
    let short_id: String = announcement.peer_id.chars().take(6).collect();
    format!(
        "{} ({short_id}-{})",
        announcement.name,
        announcement.listen.port()
    )
}

/// Feeds browse results into [`Peers`] and emits what changed.
fn browse(
    announcement: &Announcement,
    browser_loop: &EventLoop,
    browsed: &mpsc::Receiver<zeroconf::Result<BrowserEvent>>,
    emit: &dyn Fn(DiscoveryEvent),
    stop: &AtomicBool,
    ended: &AtomicBool,
) -> Result<(), String> {
    let mut peers = Peers::new(&announcement.peer_id);
    while !stop.load(Ordering::Relaxed) && !ended.load(Ordering::Relaxed) {
        browser_loop
            .poll(POLL_TIMEOUT)
            .map_err(|err| format!("mDNS browser: {err}"))?;
        for result in browsed.try_iter() {
            let event = match result {
                Err(err) if is_resolver_failure(&err) => {
                    // One peer's record could not be resolved (it vanished
                    // right after it was browsed, or its host name has no
                    // address): that peer only.
                    tracing::info!(cause = %err, "mdns record not resolved, skipped");
                    None
                }
                Err(err) => return Err(format!("mDNS browser failed: {err}")),
                Ok(BrowserEvent::Add(found)) => {
                    let record = found.txt().as_ref();
                    let txt = Txt {
                        peer_id: record.and_then(|t| t.get(TXT_PEER_ID)),
                        wire: record.and_then(|t| t.get(TXT_WIRE)),
                        addrs: record.and_then(|t| t.get(TXT_ADDRS)),
                    };
                    peers.add(found.name(), &txt, found.address(), *found.port())
                }
                Ok(BrowserEvent::Remove(removed)) => peers.remove(removed.name()),
            };
            if let Some(event) = event {
                emit(event);
            }
        }
    }
    Ok(())
}

/// zeroconf reports a failed resolution (Avahi's 5 s resolver timeout) as
/// a browser error; only its message tells it from the browser's own
/// failure.
fn is_resolver_failure(err: &zeroconf::error::Error) -> bool {
    err.to_string().starts_with("failed to resolve service")
}

/// This daemon's registered service and its loop.
struct Announcer {
    /// Dropped (withdrawn) before a new registration, so the instance name
    /// stays free.
    registration: Option<(MdnsService, EventLoop)>,
    registered: mpsc::Receiver<zeroconf::Result<String>>,
    /// The addresses in the TXT record.
    addrs: Vec<IpAddr>,
}

impl Announcer {
    fn register(announcement: &Announcement, addrs: Vec<IpAddr>) -> Result<Self, String> {
        let (tx, registered) = mpsc::channel();
        let mut service = MdnsService::new(service_type()?, announcement.listen.port());
        service.set_name(&instance_name(announcement));
        let mut txt = TxtRecord::new();
        txt.insert(TXT_PEER_ID, &announcement.peer_id)
            .and_then(|()| txt.insert(TXT_WIRE, &WIRE_VERSION.to_string()))
            .and_then(|()| txt.insert(TXT_ADDRS, &format_txt_addrs(&addrs)))
            .map_err(|err| format!("txt record: {err}"))?;
        service.set_txt_record(txt);
        if let Some(host) = crate::faults::mdns_host() {
            service.set_host(&host);
        }
        service.set_registered_callback(Box::new(move |result, _| {
            let _ = tx.send(result.map(|r| r.name().clone()));
        }));
        let service_loop = service
            .register()
            .map_err(|err| avahi_error("cannot register the mDNS service", &err))?;
        Ok(Self {
            registration: Some((service, service_loop)),
            registered,
            addrs,
        })
    }

    /// Serves the registration until `stop` or `ended`; announces again
    /// when the host's addresses change.
    fn run(
        &mut self,
        announcement: &Announcement,
        stop: &AtomicBool,
        ended: &AtomicBool,
    ) -> Result<(), String> {
        let mut next_check = Instant::now() + ADDRESS_CHECK_INTERVAL;
        while !stop.load(Ordering::Relaxed) && !ended.load(Ordering::Relaxed) {
            if let Some((_, service_loop)) = &self.registration {
                service_loop
                    .poll(POLL_TIMEOUT)
                    .map_err(|err| format!("mDNS service: {err}"))?;
            }
            for result in self.registered.try_iter() {
                match result {
                    Ok(name) => tracing::info!(instance = %name, "mdns service registered"),
                    Err(err) => return Err(format!("mDNS registration failed: {err}")),
                }
            }
            if Instant::now() >= next_check {
                next_check = Instant::now() + ADDRESS_CHECK_INTERVAL;
                let addrs = own_addrs(announcement.listen);
                if addrs != self.addrs {
                    tracing::info!(from = ?self.addrs, to = ?addrs, "host addresses changed; announcing again");
                    self.registration = None;
                    sleep_unless(REANNOUNCE_PAUSE, || {
                        stop.load(Ordering::Relaxed) || ended.load(Ordering::Relaxed)
                    });
                    *self = Self::register(announcement, addrs)?;
                }
            }
        }
        Ok(())
    }
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    sleep_unless(total, || stop.load(Ordering::Relaxed));
}

/// Sleeps `total` in short steps, ending early once `done` says so.
fn sleep_unless(total: Duration, done: impl Fn() -> bool) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !done() {
        std::thread::sleep(step);
        slept += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_name_carries_the_name_a_short_id_and_the_port() {
        let announcement = Announcement {
            peer_id: "0123456789abcdef".into(),
            name: "lan (party)".into(),
            listen: "0.0.0.0:41641".parse().unwrap(),
        };
        assert_eq!(instance_name(&announcement), "lan (party) (012345-41641)");
    }

    #[test]
    fn without_avahi_discovery_fails_with_a_reason_and_stops_on_request() {
        // This machine's own namespace runs no avahi-daemon (and must not).
        let events = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = Zeroconf
            .start(
                Announcement {
                    peer_id: "0123456789abcdef0123456789abcdef".into(),
                    name: "test".into(),
                    listen: "127.0.0.1:1".parse().unwrap(),
                },
                Box::new(move |event| sink.lock().unwrap().push(event)),
                Arc::clone(&stop),
            )
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while events.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let events = events.lock().unwrap();
        let Some(DiscoveryEvent::Failed { reason, .. }) = events.first() else {
            panic!("expected a failure without avahi, got {events:?}");
        };
        assert!(reason.contains("avahi"), "{reason}");
    }
}
