//! The client's address: the TCP peer's, unless the peer is a trusted
//! reverse proxy (`--trusted-proxies`), in which case it is the rightmost
//! address of `X-Forwarded-For` that is not itself a trusted proxy.
//!
//! Each proxy appends the address it received the request from to
//! `X-Forwarded-For`, so reading from the right, every address up to the
//! first untrusted one was written by a trusted proxy: that one is the
//! client. What lies further left was written by the client itself and is
//! never believed, and the header of a peer that is not a trusted proxy is
//! ignored entirely: a client cannot choose its address (its rate-limit
//! bucket) by sending the header.
//!
//! The address is put in the request's extensions as [`ClientIp`] (the rate
//! limit keys anonymous clients on it) and in its span as `client_ip`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request},
    http::{HeaderMap, HeaderName},
};
use ipnet::IpNet;

/// `X-Forwarded-For`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Addresses of `X-Forwarded-For` read at most, from the right: a chain of
/// trusted proxies is never that long, and a header padded with trusted
/// addresses costs no more than this to read.
pub const MAX_HOPS: usize = 16;

/// The address a request comes from, once trusted proxies are seen through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The networks of the reverse proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Trusts the proxies in `networks` (none: the peer is the client).
    pub fn new(networks: Vec<IpNet>) -> Self {
        Self(networks.into())
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `address` is a trusted proxy's.
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The client of a request that `peer` sent with `headers`.
    ///
    /// A peer outside the trusted networks is the client. Otherwise the
    /// addresses of `X-Forwarded-For` (its lines in order, each read right
    /// to left) are walked from the right: the first one that is not a
    /// trusted proxy is the client. When the walk cannot go on (a value
    /// that is not an address, no more addresses, [`MAX_HOPS`] read) the
    /// last trusted address reached is the client: at worst the request
    /// counts as its proxy's, never as an address of the client's choice.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let mut hops = 0;
        for line in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
            let Ok(line) = line.to_str() else {
                return client;
            };
            for hop in line.rsplit(',').map(str::trim) {
                if hop.is_empty() {
                    continue;
                }
                hops += 1;
                let Some(address) = parse_hop(hop).filter(|_| hops <= MAX_HOPS) else {
                    return client;
                };
                client = address;
                if !self.trusts(address) {
                    return client;
                }
            }
        }
        client
    }
}

/// One address of `X-Forwarded-For`: `192.0.2.1`, `2001:db8::1`, or the
/// same with a port (`192.0.2.1:1234`, `[2001:db8::1]:1234`), as some
/// proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// Puts the request's [`ClientIp`] in its extensions, when it came with a
/// peer address (through the API's own accept loop).
pub fn resolve(trusted: &TrustedProxies, mut request: Request) -> Request {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        let client = trusted.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientIp(client));
    }
    request
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use axum::http::{HeaderMap, HeaderValue};

    // Named from the crate's root rather than `super`, which
    // `.ci/check-module-cycles.py` would read as the parent module.
    use crate::http::edge::client_ip::{TrustedProxies, MAX_HOPS, X_FORWARDED_FOR};

    fn trusting(networks: &[&str]) -> TrustedProxies {
        TrustedProxies::new(networks.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(
            TrustedProxies::default().client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_header_of_an_untrusted_peer_is_ignored() {
        let proxies = trusting(&["10.0.0.0/8"]);
        let headers = forwarded(&["10.1.1.1"]);
        assert_eq!(
            proxies.client(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_address() {
        let proxies = trusting(&["10.0.0.0/8", "127.0.0.1/32"]);
        // The client forged the first address; the outer proxy (10.0.0.2)
        // appended the client's real one, the inner proxy the outer one's.
        let headers = forwarded(&["1.2.3.4, 203.0.113.9, 10.0.0.2"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &headers), ip("203.0.113.9"));
        // The same, over several header lines.
        let headers = forwarded(&["1.2.3.4", "203.0.113.9", "10.0.0.2"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn a_chain_of_trusted_addresses_yields_the_farthest() {
        let proxies = trusting(&["10.0.0.0/8"]);
        let headers = forwarded(&["10.0.0.7, 10.0.0.2"]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("10.0.0.7"));
        assert_eq!(
            proxies.client(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_address() {
        let proxies = trusting(&["10.0.0.0/8"]);
        for garbage in ["unknown, 10.0.0.2", "203.0.113.9 x, 10.0.0.2"] {
            let headers = forwarded(&[garbage]);
            assert_eq!(
                proxies.client(ip("10.0.0.1"), &headers),
                ip("10.0.0.2"),
                "{garbage}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"203.0.113.9\xff").unwrap(),
        );
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
    }

    #[test]
    fn ports_brackets_and_mapped_addresses_are_understood() {
        let proxies = trusting(&["127.0.0.1/32", "fd00::/8"]);
        let headers = forwarded(&["[2001:db8::1]:4711"]);
        assert_eq!(
            proxies.client(ip("::ffff:127.0.0.1"), &headers),
            ip("2001:db8::1")
        );
        let headers = forwarded(&["::ffff:203.0.113.9, fd00::2"]);
        assert_eq!(proxies.client(ip("fd00::1"), &headers), ip("203.0.113.9"));
        let headers = forwarded(&["203.0.113.9:80"]);
        assert_eq!(proxies.client(ip("127.0.0.1"), &headers), ip("203.0.113.9"));
    }

    #[test]
    fn at_most_max_hops_are_read() {
        let proxies = trusting(&["10.0.0.0/8"]);
        let padding = vec!["10.0.0.3"; MAX_HOPS].join(",");
        let headers = forwarded(&[&format!("203.0.113.9,{padding}")]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("10.0.0.3"));
        let headers = forwarded(&[&format!(
            "203.0.113.9,{}",
            vec!["10.0.0.3"; MAX_HOPS - 1].join(",")
        )]);
        assert_eq!(proxies.client(ip("10.0.0.1"), &headers), ip("203.0.113.9"));
    }
}
