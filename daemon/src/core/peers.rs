//! The core's peer bookkeeping: what discovery and pings report becomes
//! peer state (`PeerGameDb`), ping targets, and events for subscribers.

use lanspread_proto::ipc::PeerEvent;

use super::Daemon;
use crate::discovery::DiscoveryEvent;
use crate::peer_db::Discovered;
use crate::ping::{PingEvent, PingTarget};

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

    pub(super) fn on_ping(&mut self, event: PingEvent) {
        match event {
            PingEvent::Answered { peer_id, addr, rtt } => {
                self.peers
                    .answered(&peer_id, addr, rtt, std::time::Instant::now());
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
