//! The core's peer bookkeeping: what discovery and pings report becomes
//! peer state (`PeerGameDb`), ping targets, and events for subscribers.

use lanspread_proto::ipc::PeerEvent;

use super::Daemon;
use crate::discovery::DiscoveryEvent;
use crate::peer_db::Discovered;
use crate::ping::{PingEvent, PingTarget};

/// Least time between two `PeerRtt` events for one peer.
const RTT_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

impl Daemon {
    pub(super) fn on_discovery(&mut self, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Running => {
                if self.discovery_failure.take().is_some() {
                    tracing::info!("mdns discovery recovered");
                }
            }
            DiscoveryEvent::SelfVisible => self.mdns_visible = true,
            DiscoveryEvent::Failed { reason, retry_in } => {
                self.mdns_visible = false;
                self.publish(PeerEvent::RuntimeFailed {
                    component: "discovery".into(),
                    reason: format!("{reason}; retrying in {retry_in:?}"),
                });
                self.discovery_failure = Some(reason);
            }
            DiscoveryEvent::Found {
                peer_id,
                name,
                addrs,
            } => match self.peers.discovered(&peer_id, &name, &addrs) {
                Discovered::New => {
                    tracing::info!(peer = %peer_id, name = %name, ?addrs, "peer discovered");
                    let peer = self.peers.get(&peer_id).map(|p| p.info.clone());
                    if let Some(peer) = peer {
                        self.publish(PeerEvent::PeerDiscovered { peer });
                    }
                    self.update_ping_targets();
                }
                Discovered::Moved => {
                    tracing::info!(peer = %peer_id, ?addrs, "peer addresses changed");
                    self.update_ping_targets();
                }
                Discovered::Unchanged => {}
            },
            DiscoveryEvent::Gone { peer_id } => {
                // mDNS is a hint: only a peer that also stopped answering
                // pings is forgotten.
                if self.peers.left_mdns(&peer_id) {
                    tracing::info!(peer = %peer_id, "lost peer left mdns, forgotten");
                    self.update_ping_targets();
                }
            }
        }
    }

    /// Publishes a peer's round-trip time when it is new or moved by more
    /// than a quarter, at most every [`RTT_EVENT_INTERVAL`] per peer, so a
    /// live view follows it without an event per ping.
    fn publish_rtt(&mut self, peer_id: String, rtt: std::time::Duration, now: std::time::Instant) {
        let rtt_us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let due = match self.rtt_published.get(&peer_id) {
            None => true,
            Some(&(last, at)) => {
                now.duration_since(at) >= RTT_EVENT_INTERVAL && rtt_us.abs_diff(last) * 4 > last
            }
        };
        if due {
            self.rtt_published.insert(peer_id.clone(), (rtt_us, now));
            self.publish(PeerEvent::PeerRtt { peer_id, rtt_us });
        }
    }

    /// The server's upload totals per address: published with the peer each
    /// address belongs to and the rate since the last report.
    pub(super) fn on_uploads(&mut self, totals: Vec<(std::net::IpAddr, u64)>) {
        let now = std::time::Instant::now();
        let mut peers = Vec::new();
        for (ip, bytes) in totals {
            let (before, at) = self
                .upload_totals
                .insert(ip, (bytes, now))
                .unwrap_or((0, now));
            let secs = now.duration_since(at).as_secs_f64();
            let rate = if secs > 0.0 {
                (bytes.saturating_sub(before) as f64 / secs) as u64
            } else {
                0
            };
            if rate == 0 {
                continue;
            }
            let peer = self
                .peers
                .all()
                .find(|p| p.addrs.iter().chain(p.in_use.iter()).any(|a| a.ip() == ip));
            peers.push(lanspread_proto::ipc::UploadPeer {
                peer_id: peer.map(|p| p.info.peer_id.clone()).unwrap_or_default(),
                name: peer.map_or_else(|| ip.to_string(), |p| p.info.name.clone()),
                bytes,
                rate,
            });
        }
        self.publish(PeerEvent::Uploading { peers });
    }

    pub(super) fn on_ping(&mut self, event: PingEvent) {
        match event {
            PingEvent::Answered { peer_id, addr, rtt } => {
                let now = std::time::Instant::now();
                self.peers.answered(&peer_id, addr, rtt, now);
                self.publish_rtt(peer_id, rtt, now);
            }
            PingEvent::Library {
                peer_id,
                revision,
                games,
            } => {
                if self.peers.library(&peer_id, revision, games) {
                    tracing::info!(peer = %peer_id, "peer connected");
                    if let Some(peer) = self.peers.get(&peer_id).map(|p| p.info.clone()) {
                        self.publish(PeerEvent::PeerConnected { peer });
                    }
                    self.publish_peer_count();
                }
                self.publish_library();
                self.offer_sources();
            }
            PingEvent::Unreachable { peer_id, reason } => {
                if self.peers.lost(&peer_id) {
                    tracing::warn!(peer = %peer_id, %reason, "peer lost");
                    self.publish(PeerEvent::PeerLost { peer_id });
                    self.publish_peer_count();
                    self.publish_library();
                }
                // A peer that left mDNS and stopped answering is forgotten.
                self.update_ping_targets();
            }
        }
    }

    fn update_ping_targets(&mut self) {
        let targets = self
            .peers
            .all()
            .map(|p| PingTarget {
                peer_id: p.info.peer_id.clone(),
                addrs: p.addrs.clone(),
            })
            .collect();
        self.ping_targets.send_replace(targets);
    }

    fn publish_peer_count(&mut self) {
        let count = self.peer_count();
        self.publish(PeerEvent::PeerCountChanged { count });
    }

    pub(super) fn peer_count(&self) -> u32 {
        self.peers.connected_count()
    }
}
