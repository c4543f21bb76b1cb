//! Who the client is. A client's own forwarding headers (`X-Forwarded-For`, `Forwarded`,
//! `X-Real-IP`) are believed only when the connection comes from a trusted proxy (none by
//! default), as Envoy's `xff_num_trusted_hops` and nginx's `set_real_ip_from` do: otherwise
//! anyone could name any address and dodge (or aim) a per-address limit. The gateway writes
//! the address it settled on in [`CLIENT_ADDRESS`], the one header services read it from.

use std::net::IpAddr;
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

pub use flotilla::http::CLIENT_ADDRESS;

/// Headers in which a client may claim an address; dropped unless a trusted proxy sent them.
static CLAIMS: [HeaderName; 4] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-real-ip"),
    HeaderName::from_static("true-client-ip"),
    HeaderName::from_static("x-client-ip"),
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The networks whose forwarding headers are believed: load balancers in front of the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// A trusted-proxy entry that is neither an address nor a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an address or a CIDR network (10.0.0.0/8, fd00::/8, 192.0.2.7)")]
pub struct BadNetwork(pub String);

impl FromStr for TrustedProxies {
    type Err = BadNetwork;

    /// Comma-separated addresses and CIDR networks; empty trusts none.
    fn from_str(text: &str) -> Result<Self, BadNetwork> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| BadNetwork(s.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// Whether no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Settles the client's address for a request from `peer` and rewrites its forwarding
    /// headers: from a trusted proxy, `X-Forwarded-For` is kept and `peer` appended, and the
    /// client is the right-most address in it that is not itself a trusted proxy; from anyone
    /// else every claim is dropped and `X-Forwarded-For` is `peer` alone. Returns the client.
    pub fn settle(&self, peer: IpAddr, headers: &mut HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        headers.remove(&CLIENT_ADDRESS);
        let trusted_peer = self.contains(peer);
        let (client, chain) = if trusted_peer {
            let prior: Vec<String> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            // Right to left: each hop was added by the one after it; the first hop that is not
            // a trusted proxy is as far as the chain can be believed.
            let mut client = peer;
            for hop in prior.iter().rev() {
                match hop.parse::<IpAddr>() {
                    Ok(ip) => {
                        client = ip.to_canonical();
                        if !self.contains(client) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let mut chain = prior.join(", ");
            if !chain.is_empty() {
                chain.push_str(", ");
            }
            chain.push_str(&peer.to_string());
            (client, chain)
        } else {
            for name in &CLAIMS {
                headers.remove(name);
            }
            // The peer is the whole chain and the client: one value for both headers.
            if let Ok(value) = HeaderValue::from_str(&peer.to_string()) {
                headers.insert(X_FORWARDED_FOR.clone(), value.clone());
                headers.insert(CLIENT_ADDRESS.clone(), value);
            }
            return peer;
        };
        if let Ok(value) = HeaderValue::from_str(&chain) {
            headers.insert(X_FORWARDED_FOR.clone(), value);
        }
        if let Ok(value) = HeaderValue::from_str(&client.to_string()) {
            headers.insert(CLIENT_ADDRESS.clone(), value);
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn by_default_a_clients_claims_are_dropped_and_the_peer_is_the_client() {
        let trusted = TrustedProxies::default();
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=5.6.7.8"),
            ("x-real-ip", "9.9.9.9"),
            ("x-flotilla-client-address", "8.8.8.8"),
        ]);
        assert_eq!(trusted.settle(ip("203.0.113.9"), &mut h), ip("203.0.113.9"));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-flotilla-client-address"], "203.0.113.9");
        assert!(h.get("forwarded").is_none() && h.get("x-real-ip").is_none());
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.0.2.7".parse().unwrap();
        // client → (claims 6.6.6.6) → 198.51.100.1 → LB 10.0.0.5 → LB 192.0.2.7 → gateway
        let mut h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.1, 10.0.0.5")]);
        assert_eq!(trusted.settle(ip("192.0.2.7"), &mut h), ip("198.51.100.1"));
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 198.51.100.1, 10.0.0.5, 192.0.2.7");
        // Only trusted hops: the left-most is as far as it goes.
        let mut h = headers(&[("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(trusted.settle(ip("10.0.0.5"), &mut h), ip("10.1.1.1"));
        // Garbage in the chain stops the walk at the last good hop.
        let mut h = headers(&[("x-forwarded-for", "nonsense, 10.1.1.1")]);
        assert_eq!(trusted.settle(ip("10.0.0.5"), &mut h), ip("10.1.1.1"));
        // An IPv4-mapped IPv6 peer is its IPv4 address.
        let mut h = HeaderMap::new();
        assert_eq!(trusted.settle(ip("::ffff:10.0.0.5"), &mut h), ip("10.0.0.5"));
    }

    #[test]
    fn a_bad_entry_is_named() {
        assert_eq!(
            "10.0.0.0/8, lb.example".parse::<TrustedProxies>(),
            Err(BadNetwork("lb.example".into()))
        );
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
    }
}
