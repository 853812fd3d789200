//! The client's address: the socket peer, or, when the peer is a trusted proxy, the last
//! address in `X-Forwarded-For` that is not itself a trusted proxy.

use axum::http::HeaderMap;
use ipnet::IpNet;
use runbase_domain::ip::canonical;
use std::net::IpAddr;

/// Who sent the request. `None` when the peer is unknown (no socket information).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(&client) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    #[test]
    fn untrusted_peers_cannot_spoof() {
        let ip = client_ip(
            Some("127.0.0.1".parse().unwrap()),
            &headers("10.9.9.9"),
            &[],
        );
        assert_eq!(ip, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn trusted_proxies_pass_the_client_on() {
        let trusted: Vec<IpNet> = vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ];
        let ip = client_ip(
            Some("127.0.0.1".parse().unwrap()),
            &headers("1.2.3.4, 203.0.113.7, 10.0.0.2"),
            &trusted,
        );
        assert_eq!(ip, Some("203.0.113.7".parse().unwrap()));
    }
}
