//! `X-Forwarded-For` and `Forwarded` (RFC 7239), as
//! [`TrustedProxies::client_addr`] reads them: the client address that the
//! budgets per address and the development admin rule go by.
//!
//! Properties:
//!
//! - nothing panics on any bytes, in either header;
//! - from a peer that is not a trusted proxy, the client is the peer,
//!   whatever the headers say;
//! - from a trusted peer, the client is the peer or an address among the
//!   header's hops, never anything else;
//! - whatever a client writes, a trusted proxy that appends the client's
//!   address (on a line of its own, or after a comma on the client's line)
//!   is believed: the client is that address. The one exception is a
//!   `Forwarded` line whose quotes the client left open, which the proxy's
//!   hop cannot be told apart from: then the client is the proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderValue};

use crate::http::{ClientAddr, ForwardedHeader, TrustedProxies};

/// What a client sends through a proxy, and what the proxy appends.
#[derive(Debug, Arbitrary)]
pub struct Input {
    /// `Forwarded` instead of `X-Forwarded-For`.
    rfc7239: bool,
    /// The lines the client wrote.
    written: Vec<Vec<u8>>,
    /// The proxy appends to the client's last line instead of adding one.
    same_line: bool,
    /// The client's address, as the proxy appends it (never a trusted one).
    client: [u8; 4],
    /// The proxy's address within 10.0.0.0/8 (trusted).
    proxy: [u8; 3],
}

/// The trusted proxies: 10.0.0.0/8.
fn trusted(header: ForwardedHeader) -> TrustedProxies {
    TrustedProxies::parse(["10.0.0.0/8"])
        .expect("a block")
        .with_header(header)
}

/// Checks the properties on one input.
pub fn check(input: &Input) {
    let header = if input.rfc7239 {
        ForwardedHeader::Forwarded
    } else {
        ForwardedHeader::XForwardedFor
    };
    let proxies = trusted(header);
    let [a, b, c] = input.proxy;
    let proxy = SocketAddr::new(Ipv4Addr::new(10, a, b, c).into(), 443);
    let outsider: SocketAddr = "192.0.2.1:443".parse().expect("an address");

    // The client's lines alone.
    let mut headers = HeaderMap::new();
    for line in &input.written {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            headers.append(header.name(), value);
        }
    }
    assert_eq!(
        proxies.client_addr(outsider, &headers),
        ClientAddr(outsider)
    );
    let client = proxies.client_addr(proxy, &headers);
    let hops = header.hops(&headers);
    assert!(
        client == ClientAddr(proxy) || hops.contains(&Some(client.ip())),
        "{client:?} is neither the peer nor a hop of {hops:?}"
    );

    // The proxy appends the client's address.
    let mut ip = Ipv4Addr::from(input.client);
    if ip.octets()[0] == 10 {
        ip = Ipv4Addr::new(11, ip.octets()[1], ip.octets()[2], ip.octets()[3]);
    }
    let hop = match header {
        ForwardedHeader::XForwardedFor => ip.to_string(),
        ForwardedHeader::Forwarded => format!("for={ip}"),
    };
    let appended_to_line = input.same_line && headers.contains_key(header.name());
    if appended_to_line {
        let mut values: Vec<HeaderValue> = headers.get_all(header.name()).iter().cloned().collect();
        let line = values.pop().expect("a last line");
        let mut joined = line.as_bytes().to_vec();
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(hop.as_bytes());
        headers.remove(header.name());
        for value in values {
            headers.append(header.name(), value);
        }
        headers.append(
            header.name(),
            HeaderValue::from_bytes(&joined).expect("a valid line and an address"),
        );
    } else {
        headers.append(
            header.name(),
            HeaderValue::from_str(&hop).expect("an address"),
        );
    }
    let client = proxies.client_addr(proxy, &headers).ip();
    let expected = IpAddr::V4(ip);
    if appended_to_line && header == ForwardedHeader::Forwarded {
        assert!(
            client == expected || client == proxy.ip(),
            "{client} from {headers:?}"
        );
    } else {
        assert_eq!(client, expected, "{headers:?}");
    }
}

/// Builds an input from `data` and checks it.
pub fn run(data: &[u8]) {
    super::drive(data, check);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn forwarding_header_properties_hold_for_arbitrary_bytes(
            data in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            run(&data);
        }
    }
}
