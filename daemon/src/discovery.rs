//! Discovery: announce this daemon and find the others with mDNS
//! (`_lanspread._udp`, `docs/peer-protocol.md#discovery`).
//!
//! The only module that knows zeroconf. Avahi's client is not thread-safe
//! and its event loop blocks, so the service, the browser and both event
//! loops live on one dedicated thread that forwards what it learns through
//! a callback. mDNS is a hint: liveness comes from pings, not from here.
//! When Avahi goes away (or restarts) the thread drops everything and
//! starts over with backoff, saying so through [`DiscoveryEvent::Failed`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lanspread_proto::wire::WIRE_VERSION;
use zeroconf::prelude::*;
use zeroconf::{BrowserEvent, MdnsBrowser, MdnsService, ServiceType, TxtRecord};

/// TXT key holding the peer id.
pub const TXT_PEER_ID: &str = "peer_id";
/// TXT key holding the wire version.
pub const TXT_WIRE: &str = "wire";

/// How long each event loop waits per poll. Two loops per round: an event
/// is delivered at most ~2× this late; 25 ms keeps idle CPU near 1 %.
const POLL_TIMEOUT: Duration = Duration::from_millis(25);

/// First wait before retrying after Avahi failed, doubled up to
/// [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// How long a peer may be known only by undialable addresses before the
/// browser is recreated (doubling per try, [`MAX_REBROWSES`] times). Avahi
/// resolves with any address family and zeroconf keeps no interface index,
/// so a peer can come back as IPv6 link-local only; a fresh resolution may
/// yield its IPv4 address (not yet seen to happen in the lab).
const REBROWSE_AFTER: Duration = Duration::from_secs(3);
const MAX_REBROWSES: u32 = 4;

/// What this daemon announces.
#[derive(Clone, Debug)]
pub struct Announcement {
    pub peer_id: String,
    /// Human name; the mDNS instance name adds a short peer id suffix so
    /// two daemons with one host name do not collide.
    pub name: String,
    /// The QUIC port.
    pub port: u16,
}

/// What discovery reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiscoveryEvent {
    /// Announcing and browsing (first start, or recovered after a failure).
    Running,
    /// Avahi is unreachable or failed; retrying after `retry_in`.
    Failed { reason: String, retry_in: Duration },
    /// A peer (never this daemon) at its best dialable address.
    Found {
        peer_id: String,
        name: String,
        addr: SocketAddr,
    },
    /// A peer's mDNS record went away (a hint; pings decide liveness).
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

/// What the zeroconf callbacks hand to the session loop.
enum Callback {
    Browsed(zeroconf::Result<BrowserEvent>),
    Registered(zeroconf::Result<String>),
}

/// One registration + browse, polled until it fails or `stop` is set.
fn session(
    announcement: &Announcement,
    emit: &dyn Fn(DiscoveryEvent),
    stop: &AtomicBool,
) -> Result<(), Failure> {
    let fail = |reason: String| Failure {
        reason,
        was_running: false,
    };
    let avahi = |what: &str, err: zeroconf::error::Error| {
        fail(format!(
            "{what}: {err} (is avahi-daemon running and reachable over D-Bus?)"
        ))
    };
    let (tx, rx) = std::sync::mpsc::channel::<Callback>();
    let service_type =
        || ServiceType::new("lanspread", "udp").map_err(|err| fail(format!("service type: {err}")));

    let mut service = MdnsService::new(service_type()?, announcement.port);
    let short_id: String = announcement.peer_id.chars().take(6).collect();
    service.set_name(&format!("{} ({short_id})", announcement.name));
    let mut txt = TxtRecord::new();
    txt.insert(TXT_PEER_ID, &announcement.peer_id)
        .and_then(|()| txt.insert(TXT_WIRE, &WIRE_VERSION.to_string()))
        .map_err(|err| fail(format!("txt record: {err}")))?;
    service.set_txt_record(txt);
    let registered = tx.clone();
    service.set_registered_callback(Box::new(move |result, _| {
        let _ = registered.send(Callback::Registered(result.map(|r| r.name().clone())));
    }));
    let service_loop = service
        .register()
        .map_err(|err| avahi("cannot register the mDNS service", err))?;

    let browse = || -> Result<(MdnsBrowser, zeroconf::EventLoop), Failure> {
        let mut browser = MdnsBrowser::new(service_type()?);
        let browsed = tx.clone();
        browser.set_service_callback(Box::new(move |result, _| {
            let _ = browsed.send(Callback::Browsed(result));
        }));
        let browser_loop = browser
            .browse_services()
            .map_err(|err| avahi("cannot browse mDNS services", err))?;
        Ok((browser, browser_loop))
    };
    let (mut _browser, mut browser_loop) = browse()?;

    emit(DiscoveryEvent::Running);
    tracing::info!(port = announcement.port, "mdns discovery running");
    let running = |reason: String| Failure {
        reason,
        was_running: true,
    };
    let mut peers = Peers::new(&announcement.peer_id);
    while !stop.load(Ordering::Relaxed) {
        service_loop
            .poll(POLL_TIMEOUT)
            .map_err(|err| running(format!("mDNS service: {err}")))?;
        browser_loop
            .poll(POLL_TIMEOUT)
            .map_err(|err| running(format!("mDNS browser: {err}")))?;
        for callback in rx.try_iter() {
            match callback {
                Callback::Registered(Ok(name)) => {
                    tracing::info!(instance = %name, "mdns service registered");
                }
                Callback::Registered(Err(err)) => {
                    return Err(running(format!("mDNS registration failed: {err}")));
                }
                Callback::Browsed(Err(err)) => {
                    return Err(running(format!("mDNS browser failed: {err}")));
                }
                Callback::Browsed(Ok(BrowserEvent::Add(found))) => {
                    let txt = found.txt().as_ref();
                    let event = peers.add(
                        found.name(),
                        txt.and_then(|t| t.get(TXT_PEER_ID)),
                        txt.and_then(|t| t.get(TXT_WIRE)),
                        found.address(),
                        *found.port(),
                    );
                    if let Some(event) = event {
                        emit(event);
                    }
                }
                Callback::Browsed(Ok(BrowserEvent::Remove(removed))) => {
                    if let Some(event) = peers.remove(removed.name()) {
                        emit(event);
                    }
                }
            }
        }
        if let Some(peer_id) = peers.due_for_rebrowse(Instant::now()) {
            tracing::info!(peer = %peer_id, "peer resolved only to undialable addresses; browsing again");
            (_browser, browser_loop) = browse().map_err(|f| running(f.reason))?;
        }
    }
    Ok(())
}

/// The peers seen in this session: instance name → peer, and the best
/// address found for each, so that one `Add` per interface and protocol
/// becomes one `Found` per real change.
struct Peers {
    own_peer_id: String,
    /// Whether our own record was seen already this session.
    seen_self: bool,
    by_instance: HashMap<String, String>,
    best: HashMap<String, SocketAddr>,
    /// Peers seen only at undialable addresses: since when, and how many
    /// times the browser was recreated for them.
    undialable: HashMap<String, (Instant, u32)>,
}

impl Peers {
    fn new(own_peer_id: &str) -> Self {
        Self {
            own_peer_id: own_peer_id.to_owned(),
            seen_self: false,
            by_instance: HashMap::new(),
            best: HashMap::new(),
            undialable: HashMap::new(),
        }
    }

    /// A peer that has waited long enough for a dialable address to
    /// justify recreating the browser (its clock restarts, doubled).
    fn due_for_rebrowse(&mut self, now: Instant) -> Option<String> {
        let (peer_id, (since, tries)) =
            self.undialable.iter_mut().find(|(_, (since, tries))| {
                *tries < MAX_REBROWSES
                    && now.duration_since(*since) >= REBROWSE_AFTER * 2u32.pow(*tries)
            })?;
        *since = now;
        *tries += 1;
        Some(peer_id.clone())
    }

    fn add(
        &mut self,
        instance: &str,
        peer_id: Option<String>,
        wire: Option<String>,
        address: &str,
        port: u16,
    ) -> Option<DiscoveryEvent> {
        let Some(peer_id) = peer_id.filter(|id| !id.is_empty() && id.len() <= 64) else {
            tracing::debug!(instance, "mdns record without a peer id, ignored");
            return None;
        };
        if peer_id == self.own_peer_id {
            if self.seen_self {
                return None;
            }
            self.seen_self = true;
            return Some(DiscoveryEvent::SelfVisible);
        }
        if wire.as_deref() != Some(&*WIRE_VERSION.to_string()) {
            tracing::warn!(instance, peer = %peer_id, wire = ?wire, ours = WIRE_VERSION, "peer speaks another wire version, ignored");
            return None;
        }
        let Some(ip) = address
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| address_rank(ip).is_some())
        else {
            tracing::debug!(instance, address, "undialable mdns address, ignored");
            if !self.best.contains_key(&peer_id) {
                self.undialable
                    .entry(peer_id)
                    .or_insert_with(|| (Instant::now(), 0));
            }
            return None;
        };
        self.undialable.remove(&peer_id);
        let addr = SocketAddr::new(ip, port);
        self.by_instance
            .insert(instance.to_owned(), peer_id.clone());
        match self.best.get(&peer_id) {
            Some(current)
                if address_rank(&current.ip()) >= address_rank(&ip) && *current != addr =>
            {
                return None;
            }
            Some(current) if *current == addr => return None,
            _ => {}
        }
        self.best.insert(peer_id.clone(), addr);
        let name = instance
            .rsplit_once(" (")
            .map_or(instance, |(name, _)| name)
            .to_owned();
        Some(DiscoveryEvent::Found {
            peer_id,
            name,
            addr,
        })
    }

    fn remove(&mut self, instance: &str) -> Option<DiscoveryEvent> {
        let peer_id = self.by_instance.remove(instance)?;
        self.best.remove(&peer_id);
        self.undialable.remove(&peer_id);
        Some(DiscoveryEvent::Gone { peer_id })
    }
}

/// Preference among a peer's addresses (higher is better); `None` for
/// addresses that cannot be dialled (IPv6 link-local without a scope id,
/// unspecified, multicast).
fn address_rank(ip: &IpAddr) -> Option<u8> {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() => None,
        IpAddr::V4(v4) if v4.is_loopback() => Some(2),
        IpAddr::V4(_) => Some(3),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => None,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(v6) if v6.is_loopback() => Some(0),
        IpAddr::V6(_) => Some(1),
    }
}

fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> Option<String> {
        Some(WIRE_VERSION.to_string())
    }

    #[test]
    fn one_found_per_peer_at_its_best_address() {
        let mut peers = Peers::new("me");
        // Our own record: reported once as visible, never as a peer.
        assert_eq!(
            peers.add("self (me)", Some("me".into()), wire(), "10.0.0.1", 1),
            Some(DiscoveryEvent::SelfVisible)
        );
        assert_eq!(
            peers.add("self (me)", Some("me".into()), wire(), "127.0.0.1", 1),
            None
        );
        // IPv6 link-local first: not dialable.
        assert_eq!(
            peers.add("b (pb)", Some("pb".into()), wire(), "fe80::1", 9),
            None
        );
        let found = peers.add("b (pb)", Some("pb".into()), wire(), "10.0.0.2", 9);
        assert_eq!(
            found,
            Some(DiscoveryEvent::Found {
                peer_id: "pb".into(),
                name: "b".into(),
                addr: "10.0.0.2:9".parse().unwrap()
            })
        );
        // The same again, or a worse address: nothing new.
        assert_eq!(
            peers.add("b (pb)", Some("pb".into()), wire(), "10.0.0.2", 9),
            None
        );
        assert_eq!(
            peers.add("b (pb)", Some("pb".into()), wire(), "2001:db8::2", 9),
            None
        );
        assert_eq!(
            peers.add("b (pb)", Some("pb".into()), wire(), "127.0.0.1", 9),
            None
        );
        // Another wire version or no peer id: ignored.
        assert_eq!(
            peers.add("c", Some("pc".into()), Some("99".into()), "10.0.0.3", 9),
            None
        );
        assert_eq!(peers.add("d", None, wire(), "10.0.0.4", 9), None);
        assert_eq!(
            peers.remove("b (pb)"),
            Some(DiscoveryEvent::Gone {
                peer_id: "pb".into()
            })
        );
        assert_eq!(peers.remove("unknown"), None);
    }

    #[test]
    fn a_peer_known_only_at_undialable_addresses_asks_for_a_new_browser() {
        let mut peers = Peers::new("me");
        assert_eq!(
            peers.add("b (pb)", Some("pb".into()), wire(), "fe80::1", 9),
            None
        );
        let start = Instant::now();
        assert_eq!(peers.due_for_rebrowse(start), None, "not at once");
        let later = start + REBROWSE_AFTER;
        assert_eq!(peers.due_for_rebrowse(later), Some("pb".into()));
        assert_eq!(peers.due_for_rebrowse(later), None, "its clock restarted");
        assert_eq!(
            peers.due_for_rebrowse(later + REBROWSE_AFTER),
            None,
            "the wait doubled"
        );
        assert_eq!(
            peers.due_for_rebrowse(later + REBROWSE_AFTER * 2),
            Some("pb".into())
        );
        // A dialable address ends it.
        assert!(
            peers
                .add("b (pb)", Some("pb".into()), wire(), "10.0.0.2", 9)
                .is_some()
        );
        assert_eq!(peers.due_for_rebrowse(later + REBROWSE_AFTER * 100), None);
        // A peer already found is not waited for again.
        assert_eq!(
            peers.add("b (pb)", Some("pb".into()), wire(), "fe80::2", 9),
            None
        );
        assert_eq!(peers.due_for_rebrowse(later + REBROWSE_AFTER * 100), None);
        // Tries are bounded.
        peers.add("c (pc)", Some("pc".into()), wire(), "fe80::3", 9);
        let mut tries = 0;
        let mut now = later;
        for _ in 0..100 {
            now += REBROWSE_AFTER * 64;
            tries += u32::from(peers.due_for_rebrowse(now).is_some());
        }
        assert_eq!(tries, MAX_REBROWSES);
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
                    port: 1,
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
