//! What the browser has seen, per peer: pure state, no Avahi.
//!
//! One `Add` arrives per interface × protocol (and its address may be an
//! IPv6 link-local one without a scope id); the TXT record carries the
//! peer's own dialable addresses, so every resolution, whatever address
//! family Avahi picked, yields them. Removals come once per interface ×
//! protocol too, without saying which: a peer is gone only when as many
//! removals as additions have arrived.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use lanspread_proto::wire::WIRE_VERSION;

use super::DiscoveryEvent;
use super::addresses::{MAX_TXT_ADDRS, address_rank, parse_txt_addrs};

/// The TXT values of one resolution that matter here.
#[derive(Debug, Default)]
pub(super) struct Txt {
    pub peer_id: Option<String>,
    pub wire: Option<String>,
    pub addrs: Option<String>,
}

/// One peer as seen through its mDNS records.
#[derive(Debug)]
struct Seen {
    peer_id: String,
    /// Resolutions minus removals of this instance.
    live: u32,
    /// Every dialable address seen while the instance is live.
    addrs: BTreeSet<SocketAddr>,
    /// What was last reported in a `Found`.
    reported: Vec<SocketAddr>,
}

/// The peers seen in this session, by mDNS instance name.
#[derive(Debug)]
pub(super) struct Peers {
    own_peer_id: String,
    /// Whether our own record was seen already this session.
    seen_self: bool,
    by_instance: HashMap<String, Seen>,
}

impl Peers {
    pub fn new(own_peer_id: &str) -> Self {
        Self {
            own_peer_id: own_peer_id.to_owned(),
            seen_self: false,
            by_instance: HashMap::new(),
        }
    }

    /// A resolved instance: a `Found` when the peer is new or its
    /// addresses changed.
    pub fn add(
        &mut self,
        instance: &str,
        txt: &Txt,
        resolved_text: &str,
        port: u16,
    ) -> Option<DiscoveryEvent> {
        let Some(peer_id) = txt
            .peer_id
            .clone()
            .filter(|id| !id.is_empty() && id.len() <= 64)
        else {
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
        if txt.wire.as_deref() != Some(&*WIRE_VERSION.to_string()) {
            tracing::warn!(instance, peer = %peer_id, wire = ?txt.wire, ours = WIRE_VERSION, "peer speaks another wire version, ignored");
            return None;
        }
        let seen = self
            .by_instance
            .entry(instance.to_owned())
            .or_insert_with(|| Seen {
                peer_id: peer_id.clone(),
                live: 0,
                addrs: BTreeSet::new(),
                reported: Vec::new(),
            });
        if seen.peer_id != peer_id {
            // The instance name now belongs to another peer (a restart
            // under the same name): start over.
            seen.peer_id.clone_from(&peer_id);
            seen.live = 0;
            seen.addrs.clear();
            seen.reported.clear();
        }
        seen.live += 1;
        let resolved = resolved_text
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| address_rank(ip).is_some());
        if resolved.is_none() {
            tracing::debug!(
                instance,
                address = resolved_text,
                "resolved to an undialable address"
            );
        }
        let announced = parse_txt_addrs(txt.addrs.as_deref().unwrap_or(""));
        for ip in resolved.into_iter().chain(announced) {
            if seen.addrs.len() < 2 * MAX_TXT_ADDRS {
                seen.addrs.insert(SocketAddr::new(ip, port));
            }
        }
        let mut addrs: Vec<SocketAddr> = seen.addrs.iter().copied().collect();
        // Best first; equal ranks in address order, so the list is stable.
        addrs.sort_by_key(|a| std::cmp::Reverse(address_rank(&a.ip())));
        if addrs.is_empty() || addrs == seen.reported {
            return None;
        }
        seen.reported.clone_from(&addrs);
        let name = instance
            .rsplit_once(" (")
            .map_or(instance, |(name, _)| name)
            .to_owned();
        Some(DiscoveryEvent::Found {
            peer_id,
            name,
            addrs,
        })
    }

    /// A removal of `instance` on one interface × protocol; `Gone` once
    /// every resolution of it has been removed and no other instance of
    /// the same peer (a restart on a new port) is live.
    pub fn remove(&mut self, instance: &str) -> Option<DiscoveryEvent> {
        let seen = self.by_instance.get_mut(instance)?;
        seen.live = seen.live.saturating_sub(1);
        if seen.live > 0 {
            return None;
        }
        let seen = self.by_instance.remove(instance)?;
        let still_announced = self
            .by_instance
            .values()
            .any(|other| other.peer_id == seen.peer_id && !other.reported.is_empty());
        (!seen.reported.is_empty() && !still_announced).then_some(DiscoveryEvent::Gone {
            peer_id: seen.peer_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txt(peer_id: &str, addrs: &str) -> Txt {
        Txt {
            peer_id: Some(peer_id.into()),
            wire: Some(WIRE_VERSION.to_string()),
            addrs: Some(addrs.into()),
        }
    }

    fn found(peer_id: &str, name: &str, addrs: &[&str]) -> Option<DiscoveryEvent> {
        Some(DiscoveryEvent::Found {
            peer_id: peer_id.into(),
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn a_peer_resolved_only_to_ipv6_link_local_is_found_at_its_announced_addresses() {
        let mut peers = Peers::new("me");
        // The resolution Avahi hands over is fe80:: without a scope id
        // (undialable), but the TXT record says where the peer listens.
        assert_eq!(
            peers.add("b (pb)", &txt("pb", "10.0.0.2"), "fe80::1", 9),
            found("pb", "b", &["10.0.0.2:9"])
        );
        // The IPv4 resolution of the same instance adds nothing new.
        assert_eq!(
            peers.add("b (pb)", &txt("pb", "10.0.0.2"), "10.0.0.2", 9),
            None
        );
    }

    #[test]
    fn without_announced_addresses_the_resolved_one_is_used_best_first() {
        let mut peers = Peers::new("me");
        assert_eq!(peers.add("b (pb)", &txt("pb", ""), "fe80::1", 9), None);
        assert_eq!(
            peers.add("b (pb)", &txt("pb", ""), "2001:db8::2", 9),
            found("pb", "b", &["[2001:db8::2]:9"])
        );
        assert_eq!(
            peers.add("b (pb)", &txt("pb", ""), "10.0.0.2", 9),
            found("pb", "b", &["10.0.0.2:9", "[2001:db8::2]:9"])
        );
    }

    #[test]
    fn own_record_is_reported_once_as_visible_and_never_as_a_peer() {
        let mut peers = Peers::new("me");
        assert_eq!(
            peers.add("self (me)", &txt("me", "10.0.0.1"), "10.0.0.1", 1),
            Some(DiscoveryEvent::SelfVisible)
        );
        assert_eq!(
            peers.add("self (me)", &txt("me", "10.0.0.1"), "127.0.0.1", 1),
            None
        );
    }

    #[test]
    fn records_of_another_wire_version_or_without_a_peer_id_are_ignored() {
        let mut peers = Peers::new("me");
        let mut other = txt("pc", "10.0.0.3");
        other.wire = Some("99".into());
        assert_eq!(peers.add("c", &other, "10.0.0.3", 9), None);
        let mut anonymous = txt("", "10.0.0.4");
        assert_eq!(peers.add("d", &anonymous, "10.0.0.4", 9), None);
        anonymous.peer_id = None;
        assert_eq!(peers.add("d", &anonymous, "10.0.0.4", 9), None);
    }

    #[test]
    fn a_peer_is_gone_only_after_as_many_removals_as_resolutions() {
        let mut peers = Peers::new("me");
        peers.add("b (pb)", &txt("pb", "10.0.0.2"), "10.0.0.2", 9);
        peers.add("b (pb)", &txt("pb", "10.0.0.2"), "fe80::2", 9);
        assert_eq!(
            peers.remove("b (pb)"),
            None,
            "one of two interfaces × protocols"
        );
        assert_eq!(
            peers.remove("b (pb)"),
            Some(DiscoveryEvent::Gone {
                peer_id: "pb".into()
            })
        );
        assert_eq!(peers.remove("b (pb)"), None, "already gone");
        assert_eq!(peers.remove("unknown"), None);
        // Back again: found again.
        assert_eq!(
            peers.add("b (pb)", &txt("pb", "10.0.0.2"), "10.0.0.2", 9),
            found("pb", "b", &["10.0.0.2:9"])
        );
    }

    #[test]
    fn a_restart_under_a_new_instance_name_is_found_and_the_old_one_leaving_is_no_goodbye() {
        let mut peers = Peers::new("me");
        peers.add("b (pb-1000)", &txt("pb", "10.0.0.2"), "10.0.0.2", 1000);
        assert_eq!(
            peers.add("b (pb-2000)", &txt("pb", "10.0.0.2"), "10.0.0.2", 2000),
            found("pb", "b", &["10.0.0.2:2000"])
        );
        assert_eq!(peers.remove("b (pb-1000)"), None, "the new one is live");
        assert_eq!(
            peers.remove("b (pb-2000)"),
            Some(DiscoveryEvent::Gone {
                peer_id: "pb".into()
            })
        );
    }

    #[test]
    fn an_instance_name_taken_over_by_another_peer_starts_over() {
        let mut peers = Peers::new("me");
        peers.add("b (pb)", &txt("pb", "10.0.0.2"), "10.0.0.2", 9);
        assert_eq!(
            peers.add("b (pb)", &txt("pz", "10.0.0.9"), "10.0.0.9", 7),
            found("pz", "b", &["10.0.0.9:7"])
        );
    }

    #[test]
    fn a_peer_announcing_too_many_addresses_is_bounded() {
        let mut peers = Peers::new("me");
        let many: Vec<String> = (1..=200).map(|i| format!("10.1.0.{i}")).collect();
        let Some(DiscoveryEvent::Found { addrs, .. }) =
            peers.add("b (pb)", &txt("pb", &many.join(",")), "10.0.0.2", 9)
        else {
            panic!("expected a Found");
        };
        assert!(addrs.len() <= 2 * MAX_TXT_ADDRS, "{}", addrs.len());
        assert!(addrs.contains(&"10.0.0.2:9".parse().unwrap()));
    }
}
