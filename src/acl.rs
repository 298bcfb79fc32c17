//! Address access control: `--allow CIDR` / `--deny CIDR`, checked on the
//! peer address the moment a connection is accepted (or a datagram
//! arrives), before any byte of it is read.
//!
//! A deny rule always wins; when there are allow rules, a peer must match
//! one of them. IPv4 peers that reach an IPv6 socket as `::ffff:a.b.c.d` are
//! matched as the IPv4 address they are. Unix-socket peers have no address:
//! file permissions guard those.
//!
//! [`PerAddress`] bounds what one address may hold at once (files
//! transfers, say), so one peer cannot take everyone's share.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use crate::conn::Peer;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), self.prefix, 32) == masked(u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), self.prefix, 128) == masked(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
    match prefix {
        0 => 0,
        p => bits >> (width - p),
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad =
            |why: &str| format!("invalid address block '{s}': {why}; write e.g. 10.0.0.0/8, 192.168.1.7 or ::1/128");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr =
            addr.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| bad("not an IP address"))?;
        let addr = addr.to_canonical();
        let width = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(|| bad(&format!("the prefix length is 0 to {width}")))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The rules of one server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    /// Peers that may connect; empty means every peer not denied.
    pub allow: Vec<Cidr>,
    /// Peers that may not, whatever `allow` says.
    pub deny: Vec<Cidr>,
}

impl Acl {
    /// Whether a peer at `ip` may connect.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|c| c.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip)))
    }

    /// Whether `peer` may connect; Unix-socket peers always may.
    pub fn admits(&self, peer: Peer) -> bool {
        match peer {
            Peer::Ip(addr) => self.allows(addr.ip()),
            Peer::Unix => true,
        }
    }
}

/// The address a peer counts as, for limits per address: IPv4 as itself,
/// IPv6 by its /64 (one host usually holds a whole /64).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut b = v6.octets();
            b[8..].fill(0);
            IpAddr::from(b)
        }
        v4 => v4,
    }
}

/// How many of something each address holds at once, up to a limit.
#[derive(Debug)]
pub struct PerAddress {
    max: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One place held by an address; given back on drop.
#[derive(Debug)]
pub struct Place {
    of: Arc<PerAddress>,
    key: Option<IpAddr>,
}

impl PerAddress {
    /// At most `max` places per address.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PerAddress { max: max.max(1), held: Mutex::default() })
    }

    /// A place for `peer`, or `None` when its address holds `max` already.
    /// Unix peers have no address and are not counted.
    pub fn take(self: &Arc<Self>, peer: Peer) -> Option<Place> {
        let key = match peer {
            Peer::Ip(a) => address_key(a.ip()),
            Peer::Unix => return Some(Place { of: self.clone(), key: None }),
        };
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Place { of: self.clone(), key: Some(key) })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut held = self.of.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_what_they_should() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped peers match IPv4 rules");
        assert!(!c.contains(ip("::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::2")));
        assert!("::/0".parse::<Cidr>().unwrap().contains(ip("::1")));
        assert_eq!("[::1]/128".parse::<Cidr>().unwrap().to_string(), "::1/128");
    }

    #[test]
    fn bad_blocks_say_how_to_write_them() {
        for bad in ["10.0.0.0/33", "::/129", "banana", "10.0.0.0/x", ""] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.contains("write e.g."), "{bad}: {e}");
        }
    }

    #[test]
    fn deny_wins_and_allow_restricts() {
        let acl = Acl { allow: vec!["127.0.0.0/8".parse().unwrap()], deny: vec!["127.0.0.2".parse().unwrap()] };
        assert!(acl.allows(ip("127.0.0.1")));
        assert!(!acl.allows(ip("127.0.0.2")));
        assert!(!acl.allows(ip("192.168.0.1")));
        assert!(Acl::default().allows(ip("192.168.0.1")));
        assert!(acl.admits(Peer::Unix), "file permissions guard Unix sockets");
        assert!(!acl.admits(Peer::Ip("127.0.0.2:9".parse().unwrap())));
        let deny_only = Acl { allow: vec![], deny: vec!["::1".parse().unwrap()] };
        assert!(!deny_only.allows(ip("::1")) && deny_only.allows(ip("127.0.0.1")));
    }
}
