//! The proxies whose `Forwarded` or `X-Forwarded-For` a server believes,
//! and the one parser of those headers.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use http::{
    header::{self, HeaderName},
    HeaderMap,
};
#[cfg(feature = "config")]
use serde::{Deserialize, Serialize};

use super::client::ClientAddr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The header in which trusted proxies name the client: the one that the
/// proxies in front of the server write.
///
/// Only one is read. A proxy that writes one of them passes the other on as
/// the client sent it, so a server that read both would believe whatever a
/// client wrote in the header its proxy leaves alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "config", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "config", serde(rename_all = "kebab-case"))]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`: what nginx
    /// (`$proxy_add_x_forwarded_for`), Caddy, HAProxy (`option forwardfor`),
    /// Envoy, Traefik and cloud load balancers write.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239): one
    /// element per hop, its `for=` parameter the address.
    Forwarded,
}

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &header::FORWARDED,
        }
    }

    /// The addresses the header lists in `headers`, from the client's end
    /// to the last proxy's: `Some` for a hop that is an IP address, `None`
    /// for anything else (`unknown`, an obfuscated name, garbage, an element
    /// without `for=`). Header lines are one list, in order; a `Forwarded`
    /// line whose quotes do not close is one unreadable hop. Never panics,
    /// whatever the bytes.
    pub fn hops(self, headers: &HeaderMap) -> Vec<Option<IpAddr>> {
        let mut hops = Vec::new();
        for value in headers.get_all(self.name()) {
            let value = value.as_bytes();
            match self {
                ForwardedHeader::XForwardedFor => {
                    hops.extend(value.split(|&b| b == b',').map(parse_node));
                }
                ForwardedHeader::Forwarded => forwarded_hops(value, &mut hops),
            }
        }
        hops
    }
}

/// The reverse proxies (IP addresses and CIDR blocks) whose
/// [`ForwardedHeader`] (`X-Forwarded-For` unless told otherwise) a server
/// believes, to find a request's [`ClientAddr`].
///
/// Empty (the default), no header is ever read: the client address is the
/// connection's peer. `X-Forwarded-For` and `Forwarded` are written by
/// whoever sends the request, so a server that believed them from anyone
/// would let each request name its own address, and dodge every budget
/// kept per address. A proxy appends the address it received the request
/// from; only those hops are believed. [`client_addr`](Self::client_addr)
/// reads the header from the right, skips the hops that are themselves
/// trusted proxies (a chain such as CDN, then load balancer), and takes the
/// first other one: the rightmost untrusted hop. What lies to the left of it
/// was written by the client.
///
/// List only proxies that overwrite or append to the header on every
/// request, and make sure clients cannot reach the server around them.
///
/// ```
/// use herdsman::http::{ClientAddr, ForwardedHeader, TrustedProxies};
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
/// // Proxies that write RFC 7239's `Forwarded` instead.
/// let proxies = proxies.with_header(ForwardedHeader::Forwarded);
/// headers.insert("forwarded", r#"for=203.0.113.9, for="[2001:db8::1]:4711""#.parse().unwrap());
/// let client = proxies.client_addr("10.1.2.3:5000".parse().unwrap(), &headers);
/// assert_eq!(client.ip().to_string(), "2001:db8::1");
///
/// assert!(TrustedProxies::parse(["10.0.0.0/33"]).is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<Block>,
    header: ForwardedHeader,
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
        Ok(TrustedProxies {
            blocks,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads `header` instead of `X-Forwarded-For`.
    pub fn with_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The header read.
    pub fn header(&self) -> ForwardedHeader {
        self.header
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
    /// `peer`: `peer` itself, unless `peer` is trusted and the
    /// [header](Self::header) names another hop (read from the right, past
    /// trusted hops, up to the first hop that is not an address). A
    /// forwarded address has port 0: the header carries none worth
    /// believing.
    pub fn client_addr(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddr {
        if !self.trusts(peer.ip()) {
            return ClientAddr(peer);
        }
        let mut client = None;
        for hop in self.header.hops(headers).into_iter().rev() {
            // A hop that is not an address is not one a trusted proxy
            // wrote: stop at it, and keep what was found so far.
            let Some(ip) = hop else { break };
            client = Some(ip);
            if !self.trusts(ip) {
                break;
            }
        }
        ClientAddr(client.map_or(peer, |ip| SocketAddr::new(ip, 0)))
    }
}

/// A node as proxies write it: `1.2.3.4`, `2001:db8::1`, `[2001:db8::1]`,
/// and the forms with a port (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
/// Surrounding whitespace is ignored; anything else is `None`.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(node.trim_ascii()).ok()?;
    let bracketed = node.strip_prefix('[').and_then(|n| n.strip_suffix(']'));
    let ip = match bracketed {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().ok()?.into(),
        None => node
            .parse::<IpAddr>()
            .or_else(|_| node.parse::<SocketAddr>().map(|s| s.ip()))
            .ok()?,
    };
    Some(canonical(ip))
}

/// The hops of one `Forwarded` line (RFC 7239 §4: elements separated by
/// `,`, parameters by `;`, values tokens or quoted strings): each
/// element's `for=` node. An empty element is skipped (a list may have
/// them); one with no `for=`, or with two, is an unreadable hop; so is the
/// whole line when a quote does not close, since where its elements end
/// cannot be known.
fn forwarded_hops(line: &[u8], hops: &mut Vec<Option<IpAddr>>) {
    if !quotes_close(line) {
        hops.push(None);
        return;
    }
    for element in split_outside_quotes(line, b',') {
        if element.trim_ascii().is_empty() {
            continue;
        }
        let mut nodes = split_outside_quotes(element, b';').filter_map(|pair| {
            let (name, value) = split_once(pair, b'=')?;
            name.trim_ascii()
                .eq_ignore_ascii_case(b"for")
                .then(|| unquote(value.trim_ascii()))
        });
        let hop = match (nodes.next(), nodes.next()) {
            (Some(node), None) => node.as_deref().and_then(parse_node),
            _ => None,
        };
        hops.push(hop);
    }
}

/// Whether every quoted string of `value` closes.
fn quotes_close(value: &[u8]) -> bool {
    let (mut quoted, mut escaped) = (false, false);
    for &b in value {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => quoted = !quoted,
            _ => {}
        }
    }
    !quoted
}

/// The parts of `value` between the `sep` bytes outside quoted strings.
/// With unclosed quotes, the last part runs to the end.
fn split_outside_quotes(value: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let (mut quoted, mut escaped) = (false, false);
    value.split(move |&b| {
        match (quoted, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => quoted = !quoted,
            _ => {}
        }
        b == sep && !quoted
    })
}

fn split_once(value: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = value.iter().position(|&b| b == sep)?;
    Some((&value[..at], &value[at + 1..]))
}

/// A token as it is, a quoted string without its quotes and escapes;
/// `None` for a quoted string with junk after its closing quote.
fn unquote(value: &[u8]) -> Option<Vec<u8>> {
    let Some(inner) = value.strip_prefix(b"\"") else {
        return Some(value.to_vec());
    };
    let mut out = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next()?),
            b'"' => return bytes.as_slice().is_empty().then_some(out),
            _ => out.push(b),
        }
    }
    None
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

    fn client_by(header: ForwardedHeader, peer: &str, values: &[&str]) -> String {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32"]).with_header(header);
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(header.name(), value.parse().unwrap());
        }
        p.client_addr(peer.parse().unwrap(), &headers).0.to_string()
    }

    #[test]
    fn forwarded_names_the_rightmost_untrusted_for_node() {
        let fwd = |values: &[&str]| client_by(ForwardedHeader::Forwarded, "10.0.0.1:1", values);
        assert_eq!(fwd(&["for=1.1.1.1, for=203.0.113.9"]), "203.0.113.9:0");
        assert_eq!(
            fwd(&["for=1.1.1.1;proto=https, For=\"[2001:db9::7]:4711\";by=10.0.0.1"]),
            "[2001:db9::7]:0"
        );
        assert_eq!(
            fwd(&["for=203.0.113.9", "for=\"10.0.0.7:80\""]),
            "203.0.113.9:0",
            "lines are one list, trusted hops skipped"
        );
        assert_eq!(
            fwd(&["for=203.0.113.9,, "]),
            "203.0.113.9:0",
            "empty elements"
        );
        assert_eq!(
            fwd(&["for=\"a;b,c\\\"d\", for=198.51.100.4"]),
            "198.51.100.4:0",
            "separators and escapes inside quotes"
        );
    }

    #[test]
    fn unreadable_forwarded_hops_stop_the_walk() {
        let fwd = |values: &[&str]| client_by(ForwardedHeader::Forwarded, "10.0.0.1:1", values);
        for stop in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=203.0.113.8;for=203.0.113.7",
            "for=\"203.0.113.8\"junk",
        ] {
            assert_eq!(
                fwd(&[&format!("for=1.1.1.1, {stop}")]),
                "10.0.0.1:1",
                "{stop}"
            );
            assert_eq!(
                fwd(&[&format!("for=1.1.1.1, {stop}, for=10.0.0.9")]),
                "10.0.0.9:0",
                "{stop}: what was found before it is kept"
            );
        }
        // An unclosed quote hides where the appended element starts.
        assert_eq!(fwd(&["for=\"1.1.1.1, for=203.0.113.9"]), "10.0.0.1:1");
        assert_eq!(
            fwd(&["for=\"1.1.1.1", "for=203.0.113.9"]),
            "203.0.113.9:0",
            "a broken line does not spoil the next"
        );
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        headers.insert("forwarded", "for=198.51.100.4".parse().unwrap());
        let peer = "10.0.0.1:1".parse().unwrap();
        let xff = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            xff.client_addr(peer, &headers).ip().to_string(),
            "203.0.113.9"
        );
        let fwd = xff.with_header(ForwardedHeader::Forwarded);
        assert_eq!(
            fwd.client_addr(peer, &headers).ip().to_string(),
            "198.51.100.4"
        );
    }

    const HEADERS: [ForwardedHeader; 2] =
        [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded];

    /// What a trusted proxy appends for the client 203.0.113.9.
    fn appended(header: ForwardedHeader) -> &'static str {
        match header {
            ForwardedHeader::XForwardedFor => "203.0.113.9",
            ForwardedHeader::Forwarded => "for=203.0.113.9",
        }
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_from_an_untrusted_peer_leave_the_peer(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96),
        ) {
            for header in HEADERS {
                let mut headers = HeaderMap::new();
                if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                    headers.append(header.name(), value);
                }
                let p = proxies(&["10.0.0.0/8"]).with_header(header);
                let peer: SocketAddr = "192.0.2.1:7".parse().unwrap();
                proptest::prop_assert_eq!(p.client_addr(peer, &headers), ClientAddr(peer));
                // From a trusted peer it never panics either.
                let _ = p.client_addr("10.0.0.1:7".parse().unwrap(), &headers);
            }
        }

        #[test]
        fn nothing_a_client_writes_before_a_trusted_proxys_hop_is_believed(
            written in "[ -~]{0,48}",
            same_line in proptest::prelude::any::<bool>(),
        ) {
            for header in HEADERS {
                let mut headers = HeaderMap::new();
                let hop = appended(header);
                if same_line {
                    let line = format!("{written}, {hop}");
                    headers.append(header.name(), line.parse().unwrap());
                } else {
                    if let Ok(value) = written.parse() {
                        headers.append(header.name(), value);
                    }
                    headers.append(header.name(), hop.parse().unwrap());
                }
                let p = proxies(&["10.0.0.0/8"]).with_header(header);
                let peer: SocketAddr = "10.0.0.1:7".parse().unwrap();
                let client = p.client_addr(peer, &headers).0.to_string();
                // The hop the proxy appended, or (a line whose quotes the
                // client left open, appended to) the proxy: never an
                // address of the client's choosing.
                let unreadable = same_line
                    && header == ForwardedHeader::Forwarded
                    && !quotes_close(written.as_bytes());
                let expected = if unreadable { "10.0.0.1:7" } else { "203.0.113.9:0" };
                proptest::prop_assert_eq!(client, expected, "{:?}", headers);
            }
        }
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
