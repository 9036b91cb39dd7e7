//! The network address a request came from, for budgets per client address.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::Request;

use crate::key::{Key, KeyFn};

/// The address of the client that sent a request, in the request's
/// extensions.
///
/// The server inserts it from the connection's peer address
/// (`herdsman_axum::serve` does; around another server, insert it
/// yourself). It is never read from a header: `Forwarded` and
/// `X-Forwarded-For` are written by clients as well as by proxies, so a
/// budget keyed by them would be dodged by sending a new value each time.
/// A server behind a proxy it trusts may insert the address that proxy
/// reports instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The IP address, without the port.
    pub fn ip(&self) -> IpAddr {
        self.0.ip()
    }
}

/// The [`KeyFn`] of a request's client address ([`ClientAddr`]), for limits
/// and budgets per address; `None` when the request has no [`ClientAddr`].
///
/// The port is left out (a client opens as many connections as it likes).
/// An IPv6 address is keyed by its /64 prefix, the block one host is
/// usually given, so that a client cannot take a new budget by rotating
/// through its own addresses; an IPv4-mapped IPv6 address is its IPv4
/// address.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ClientAddress;

impl ClientAddress {
    /// The key of `ip`: the IPv4 address, or the IPv6 /64 prefix.
    pub fn key_of(ip: IpAddr) -> Key {
        match ip {
            IpAddr::V4(v4) => Key::new(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::new(v4.octets()),
                None => Key::new(prefix_64(v6)),
            },
        }
    }
}

fn prefix_64(v6: Ipv6Addr) -> [u8; 8] {
    let mut prefix = [0; 8];
    prefix.copy_from_slice(&v6.octets()[..8]);
    prefix
}

impl<B> KeyFn<Request<B>> for ClientAddress {
    fn key(&self, req: &Request<B>) -> Option<Key> {
        let addr = req.extensions().get::<ClientAddr>()?;
        Some(Self::key_of(addr.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(addr: &str) -> Option<Key> {
        let mut req = Request::new(());
        req.extensions_mut()
            .insert(ClientAddr(addr.parse().unwrap()));
        ClientAddress.key(&req)
    }

    #[test]
    fn the_port_is_not_part_of_the_address() {
        assert_eq!(key("10.0.0.1:1000"), key("10.0.0.1:2000"));
        assert_ne!(key("10.0.0.1:1000"), key("10.0.0.2:1000"));
    }

    #[test]
    fn ipv6_addresses_in_one_64_block_are_one_client() {
        assert_eq!(key("[2001:db8::1]:1"), key("[2001:db8::ffff:1]:1"));
        assert_ne!(key("[2001:db8::1]:1"), key("[2001:db8:0:1::1]:1"));
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        assert_eq!(key("[::ffff:10.0.0.1]:1"), key("10.0.0.1:1"));
    }

    #[test]
    fn a_request_without_an_address_has_no_key() {
        assert_eq!(ClientAddress.key(&Request::new(())), None);
    }

    #[test]
    fn a_forwarded_header_is_never_read() {
        let req = Request::builder()
            .header("forwarded", "for=10.9.9.9")
            .header("x-forwarded-for", "10.9.9.9")
            .body(())
            .unwrap();
        assert_eq!(ClientAddress.key(&req), None);
    }
}
