//! Which addresses a peer can be dialled at: ranking, the `addrs` TXT
//! value, and this host's own addresses (what this daemon announces).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Most addresses announced in, or taken from, one TXT record.
pub const MAX_TXT_ADDRS: usize = 8;

/// Preference among a peer's addresses (higher is better); `None` for
/// addresses that cannot be dialled (IPv6 link-local without a scope id,
/// unspecified, multicast, broadcast).
pub fn address_rank(ip: &IpAddr) -> Option<u8> {
    match ip {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() => None,
        IpAddr::V4(v4) if v4.is_loopback() => Some(1),
        IpAddr::V4(v4) if v4.is_link_local() => Some(2),
        IpAddr::V4(_) => Some(4),
        IpAddr::V6(v6) if v6.is_unspecified() || v6.is_multicast() => None,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => None,
        IpAddr::V6(v6) if v6.is_loopback() => Some(0),
        IpAddr::V6(_) => Some(3),
    }
}

/// The `addrs` TXT value: comma-separated IP addresses.
pub fn format_txt_addrs(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .take(MAX_TXT_ADDRS)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The dialable addresses of an `addrs` TXT value; anything else in it is
/// skipped, and at most [`MAX_TXT_ADDRS`] are taken.
pub fn parse_txt_addrs(value: &str) -> Vec<IpAddr> {
    value
        .split(',')
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .filter(|ip| address_rank(ip).is_some())
        .take(MAX_TXT_ADDRS)
        .collect()
}

/// What this daemon announces for a QUIC server listening on `listen`:
/// that address, or, when it listens on every address, this host's IPv4
/// addresses other than loopback (the QUIC socket is IPv4). Empty when
/// they cannot be read (peers then dial what Avahi resolves).
pub fn own_addrs(listen: SocketAddr) -> Vec<IpAddr> {
    if !listen.ip().is_unspecified() {
        return vec![listen.ip()];
    }
    match std::fs::read_to_string("/proc/net/fib_trie") {
        Ok(text) => local_ipv4_addrs(&text)
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .map(IpAddr::V4)
            .take(MAX_TXT_ADDRS)
            .collect(),
        Err(err) => {
            tracing::debug!(cause = %err, "cannot read this host's addresses; announcing none");
            Vec::new()
        }
    }
}

/// The local IPv4 addresses in a `/proc/net/fib_trie` dump: the entries
/// whose leaf says `/32 host LOCAL`, in order, without repeats.
pub fn local_ipv4_addrs(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = ip.parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.take().filter(|ip| !found.contains(ip)) {
                found.push(ip);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialable_addresses_are_ranked_ipv4_first_and_link_local_ipv6_never() {
        let rank = |s: &str| address_rank(&s.parse().unwrap());
        assert!(rank("10.0.0.1") > rank("2001:db8::1"));
        assert!(rank("2001:db8::1") > rank("169.254.3.4"));
        assert!(rank("169.254.3.4") > rank("127.0.0.1"));
        for undialable in ["fe80::1", "0.0.0.0", "::", "224.0.0.251", "ff02::fb"] {
            assert_eq!(rank(undialable), None, "{undialable}");
        }
    }

    #[test]
    fn the_txt_value_round_trips_and_skips_what_cannot_be_dialled() {
        let addrs: Vec<IpAddr> = vec!["10.0.0.1".parse().unwrap(), "192.168.1.7".parse().unwrap()];
        let value = format_txt_addrs(&addrs);
        assert_eq!(value, "10.0.0.1,192.168.1.7");
        assert_eq!(parse_txt_addrs(&value), addrs);
        assert_eq!(
            parse_txt_addrs("fe80::1,bogus,,10.0.0.9, 0.0.0.0"),
            vec!["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        let many = (1..=50).map(|i| format!("10.0.0.{i}")).collect::<Vec<_>>();
        assert_eq!(parse_txt_addrs(&many.join(",")).len(), MAX_TXT_ADDRS);
    }

    #[test]
    fn local_addresses_come_from_the_fib_trie() {
        let dump = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.77.0.0/24 2 0 2
        |-- 10.77.0.0
           /24 link UNICAST
        |-- 10.77.0.2
           /32 host LOCAL
        |-- 10.77.0.255
           /32 link BROADCAST
     |-- 127.0.0.1
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
     |-- 10.77.0.2
        /32 host LOCAL
";
        assert_eq!(
            local_ipv4_addrs(dump),
            vec![Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::LOCALHOST]
        );
        assert_eq!(
            own_addrs("192.168.5.5:7000".parse().unwrap()),
            vec!["192.168.5.5".parse::<IpAddr>().unwrap()]
        );
    }
}
