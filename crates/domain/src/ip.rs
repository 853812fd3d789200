//! Per-key IP allowlists: up to ten entries, each an IPv4 or IPv6 address or a CIDR block.

use ipnet::IpNet;
use std::net::IpAddr;

/// The most entries a key's allowlist may hold.
pub const MAX_ALLOWLIST_ENTRIES: usize = 10;

/// An allowlist; empty allows every address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// Parses entries such as `127.0.0.1`, `10.0.0.0/8`, `::1`, `2001:db8::/32`.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        if entries.len() > MAX_ALLOWLIST_ENTRIES {
            return Err(format!(
                "at most {MAX_ALLOWLIST_ENTRIES} IP addresses are allowed per key, got {}",
                entries.len()
            ));
        }
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.as_ref().trim();
            let net = match e.parse::<IpNet>() {
                Ok(n) => n.trunc(),
                Err(_) => match e.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => return Err(format!("\"{e}\" is not an IP address or CIDR block")),
                },
            };
            let net = canonical_net(net);
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
        Ok(IpAllowlist(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` may use the key. IPv4-mapped IPv6 addresses match IPv4 entries; and an IPv4
    /// client matches an IPv6 block that contains its mapped form (`::ffff:0:0/95`, `::/0`):
    /// entries of /96 or longer inside the mapped range are stored as IPv4 blocks, but a shorter
    /// one cannot be, and the client is canonicalized to IPv4, so it would otherwise match none.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let ip = canonical(ip);
        self.0.iter().any(|n| match (n, ip) {
            (IpNet::V6(n6), IpAddr::V4(v4)) => n6.contains(&v4.to_ipv6_mapped()),
            _ => n.contains(&ip),
        })
    }

    /// The entries as strings (single addresses without a `/32` or `/128`).
    pub fn to_strings(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| {
                if n.prefix_len() == n.max_prefix_len() {
                    n.addr().to_string()
                } else {
                    n.to_string()
                }
            })
            .collect()
    }
}

/// An IPv4-mapped entry (`::ffff:a.b.c.d`, `::ffff:a.b.c.0/120`) as the IPv4 entry it means:
/// client addresses are canonicalized the same way before they are matched, so a mapped entry
/// would otherwise match nothing.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`, so a dual-stack listener matches IPv4 entries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_allows_all() {
        assert!(IpAllowlist::default().allows(ip("203.0.113.9")));
    }

    #[test]
    fn addresses_and_blocks() {
        let l = IpAllowlist::parse(&["10.1.2.3", "127.0.0.0/8", "2001:db8::/32"]).unwrap();
        assert!(l.allows(ip("10.1.2.3")));
        assert!(!l.allows(ip("10.1.2.4")));
        assert!(l.allows(ip("127.4.5.6")));
        assert!(l.allows(ip("::ffff:127.0.0.1")));
        assert!(l.allows(ip("2001:db8::1")));
        assert!(!l.allows(ip("::1")));
        assert_eq!(l.to_strings(), ["10.1.2.3", "127.0.0.0/8", "2001:db8::/32"]);
    }

    #[test]
    fn mapped_entries_are_their_ipv4_selves() {
        let l = IpAllowlist::parse(&["::ffff:127.0.0.1", "::ffff:10.1.0.0/112"]).unwrap();
        assert_eq!(l.to_strings(), ["127.0.0.1", "10.1.0.0/16"]);
        assert!(l.allows(ip("127.0.0.1")));
        assert!(l.allows(ip("::ffff:127.0.0.1")));
        assert!(l.allows(ip("10.1.200.3")));
        assert!(!l.allows(ip("10.2.0.1")));
        // Mapped and plain spellings of one address are one entry.
        let l = IpAllowlist::parse(&["127.0.0.1", "::ffff:127.0.0.1"]).unwrap();
        assert_eq!(l.to_strings(), ["127.0.0.1"]);
    }

    #[test]
    fn ipv6_blocks_wider_than_the_mapped_range_match_ipv4_clients() {
        let l = IpAllowlist::parse(&["::ffff:0:0/95"]).unwrap();
        assert!(l.allows(ip("127.0.0.1")));
        assert!(l.allows(ip("::ffff:203.0.113.9")));
        let all = IpAllowlist::parse(&["::/0"]).unwrap();
        assert!(all.allows(ip("198.51.100.1")));
        assert!(all.allows(ip("2001:db8::1")));
        // A block beside the mapped range does not.
        let other = IpAllowlist::parse(&["2001:db8::/32"]).unwrap();
        assert!(!other.allows(ip("127.0.0.1")));
    }

    #[test]
    fn rejects_garbage_and_too_many() {
        assert!(IpAllowlist::parse(&["nope"]).is_err());
        assert!(IpAllowlist::parse(&["10.0.0.0/33"]).is_err());
        let eleven: Vec<String> = (0..11).map(|i| format!("10.0.0.{i}")).collect();
        assert!(IpAllowlist::parse(&eleven).is_err());
    }
}
