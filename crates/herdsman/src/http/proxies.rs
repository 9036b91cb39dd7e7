//! The proxies whose `X-Forwarded-For` a server believes.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use http::{header::HeaderName, HeaderMap};

use super::client::ClientAddr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The reverse proxies (IP addresses and CIDR blocks) whose
/// `X-Forwarded-For` a server believes, to find a request's [`ClientAddr`].
///
/// Empty (the default), no header is ever read: the client address is the
/// connection's peer. `X-Forwarded-For` is written by whoever sends the
/// request, so a server that believed it from anyone would let each
/// request name its own address, and dodge every budget kept per address.
/// A proxy appends the address it received the request from; only those
/// hops are believed. [`client_addr`](Self::client_addr) reads the header
/// from the right, skips the hops that are themselves trusted proxies
/// (a chain such as CDN, then load balancer), and takes the first other
/// one. What lies to the left of it was written by the client.
///
/// List only proxies that overwrite or append to the header on every
/// request, and make sure clients cannot reach the server around them.
///
/// ```
/// use herdsman::http::{ClientAddr, TrustedProxies};
/// use http::HeaderMap;
///
/// let proxies = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7"]).unwrap();
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "203.0.113.9, 198.51.100.4".parse().unwrap());
///
/// // From the load balancer: the hop it appended.
/// let client = proxies.client_addr("10.1.2.3:5000".parse().unwrap(), &headers);
/// assert_eq!(client.ip().to_string(), "198.51.100.4");
/// // From anyone else: the peer, whatever the header says.
/// let client = proxies.client_addr("198.51.100.4:5000".parse().unwrap(), &headers);
/// assert_eq!(client, ClientAddr("198.51.100.4:5000".parse().unwrap()));
///
/// assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
}

/// One CIDR block: an address and the number of leading bits that count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Block {
    addr: IpAddr,
    prefix: u8,
}

impl Block {
    fn parse(entry: &str) -> Option<Block> {
        let entry = entry.trim();
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Block { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4
/// peer) as its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether the first `prefix` of `width` bits of `a` and `b` agree.
fn same_prefix(a: u128, b: u128, width: u32, prefix: u8) -> bool {
    let ignored = width - u32::from(prefix);
    ignored >= width || (a >> ignored) == (b >> ignored)
}

impl TrustedProxies {
    /// No trusted proxy: the client address is always the peer's.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses IP addresses (`"10.0.0.1"`, `"::1"`) and CIDR blocks
    /// (`"10.0.0.0/8"`, `"fd00::/8"`).
    pub fn parse<I>(entries: I) -> Result<Self, InvalidProxy>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let blocks = entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                Block::parse(entry).ok_or_else(|| InvalidProxy {
                    entry: entry.to_owned(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { blocks })
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// The client address of a request that came over a connection from
    /// `peer`: `peer` itself, unless `peer` is trusted and `X-Forwarded-For`
    /// names another hop (read from the right, past trusted hops). A
    /// forwarded address has port 0: the header carries none worth
    /// believing.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        if !self.trusts(peer.ip()) {
            return ClientAddr(peer);
        }
        let mut hops = Vec::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let Ok(value) = value.to_str() else {
                return ClientAddr(peer);
            };
            hops.extend(value.split(',').map(str::trim));
        }
        let mut client = None;
        for hop in hops.iter().rev() {
            // A hop that is not an address is not one a trusted proxy
            // wrote: stop at it, and keep what was found so far.
            let Some(ip) = parse_hop(hop) else { break };
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        ClientAddr(client.map_or(peer, |ip| SocketAddr::new(ip, 0)))
    }
}

/// `1.2.3.4`, `2001:db8::1`, and the forms with a port some proxies write
/// (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .or_else(|_| hop.parse::<SocketAddr>().map(|s| s.ip()))
        .ok()
        .map(canonical)
}

/// An entry of [`TrustedProxies::parse`] that is neither an IP address nor
/// a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProxy {
    entry: String,
}

impl InvalidProxy {
    /// The entry.
    pub fn entry(&self) -> &str {
        &self.entry
    }
}

impl fmt::Display for InvalidProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not an IP address or CIDR block: {:?} (expected \"10.0.0.1\" or \"10.0.0.0/8\")",
            self.entry
        )
    }
}

impl std::error::Error for InvalidProxy {}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(entries).unwrap()
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    fn client(proxies: &TrustedProxies, peer: &str, values: &[&str]) -> String {
        let addr = proxies.client_addr(peer.parse().unwrap(), &forwarded(values));
        addr.0.to_string()
    }

    #[test]
    fn blocks_match_their_prefix_only() {
        let p = proxies(&["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]);
        assert!(p.trusts("10.255.0.1".parse().unwrap()));
        assert!(!p.trusts("11.0.0.1".parse().unwrap()));
        assert!(p.trusts("192.0.2.7".parse().unwrap()));
        assert!(!p.trusts("192.0.2.8".parse().unwrap()));
        assert!(p.trusts("2001:db8:1::1".parse().unwrap()));
        assert!(!p.trusts("2001:db9::1".parse().unwrap()));
        assert!(p.trusts("::ffff:10.0.0.1".parse().unwrap()), "mapped IPv4");
    }

    #[test]
    fn entries_that_are_not_blocks_are_refused() {
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "1.2.3.4/+8",
        ] {
            let err = TrustedProxies::parse([bad]).unwrap_err();
            assert_eq!(err.entry(), bad);
        }
        assert!(TrustedProxies::parse(["0.0.0.0/0", " 10.0.0.1 "]).is_ok());
    }

    #[test]
    fn without_trusted_proxies_the_header_is_never_read() {
        let p = TrustedProxies::none();
        assert_eq!(client(&p, "10.0.0.1:1", &["203.0.113.9"]), "10.0.0.1:1");
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, "192.0.2.1:1", &["10.0.0.2"]), "192.0.2.1:1");
    }

    #[test]
    fn a_trusted_peer_names_the_hop_it_appended() {
        let p = proxies(&["10.0.0.0/8"]);
        let spoofed = ["1.1.1.1, 203.0.113.9"];
        assert_eq!(client(&p, "10.0.0.1:1", &spoofed), "203.0.113.9:0");
        // Several header lines are one list, in order.
        let lines = ["1.1.1.1", "203.0.113.9:5000"];
        assert_eq!(client(&p, "10.0.0.1:1", &lines), "203.0.113.9:0");
    }

    #[test]
    fn hops_written_by_trusted_proxies_are_skipped() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        let chain = ["1.1.1.1, 203.0.113.9, [2001:db8::5]:80, 10.0.0.7"];
        assert_eq!(client(&p, "10.0.0.1:1", &chain), "203.0.113.9:0");
        assert_eq!(client(&p, "10.0.0.1:1", &["10.0.0.7"]), "10.0.0.7:0");
    }

    #[test]
    fn a_garbled_or_missing_header_leaves_the_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(client(&p, "10.0.0.1:1", &[]), "10.0.0.1:1");
        assert_eq!(client(&p, "10.0.0.1:1", &["unknown"]), "10.0.0.1:1");
        assert_eq!(
            client(&p, "10.0.0.1:1", &["203.0.113.9, junk, 198.51.100.4"]),
            "198.51.100.4:0",
            "the hop the trusted proxy appended"
        );
    }
}
