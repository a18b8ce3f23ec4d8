//! Pod address allocation in the node subnet, with host-local's semantics: the next free
//! address after the last one handed out, so a released address is not reused at once.

use std::{collections::BTreeSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IpamError {
    #[error("no free address in node subnet {0}")]
    Exhausted(Ipv4Network),
    #[error("address {0} is not a pod address of node subnet {1}")]
    OutOfRange(Ipv4Addr, Ipv4Network),
}

/// The pod addresses of a node subnet: all but the network address, the gateway (first
/// address) and the broadcast address.
#[derive(Clone, Debug)]
pub struct Ipam {
    subnet: Ipv4Network,
    used: BTreeSet<u32>,
    last: Option<u32>,
}

impl Ipam {
    pub fn new(subnet: Ipv4Network, last: Option<Ipv4Addr>) -> Self {
        Ipam { subnet, used: BTreeSet::new(), last: last.map(u32::from) }
    }

    fn first(&self) -> u32 {
        u32::from(self.subnet.network()) + 2
    }

    fn end(&self) -> u32 {
        u32::from(self.subnet.broadcast()) - 1
    }

    /// Marks an address taken (restoring state).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        let n = u32::from(ip);
        if n < self.first() || n > self.end() {
            return Err(IpamError::OutOfRange(ip, self.subnet));
        }
        self.used.insert(n);
        Ok(())
    }

    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let (first, end) = (self.first(), self.end());
        let start = match self.last {
            Some(l) if l >= first && l < end => l + 1,
            _ => first,
        };
        let candidate = (start..=end).chain(first..start).find(|n| !self.used.contains(n));
        let n = candidate.ok_or(IpamError::Exhausted(self.subnet))?;
        self.used.insert(n);
        self.last = Some(n);
        Ok(Ipv4Addr::from(n))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }

    pub fn last(&self) -> Option<Ipv4Addr> {
        self.last.map(Ipv4Addr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn skips_network_gateway_and_broadcast() {
        let mut ipam = Ipam::new(net("10.128.0.0/29"), None);
        let got: Vec<_> = (0..5).map(|_| ipam.allocate().unwrap().to_string()).collect();
        assert_eq!(got, ["10.128.0.2", "10.128.0.3", "10.128.0.4", "10.128.0.5", "10.128.0.6"]);
        assert_eq!(ipam.allocate(), Err(IpamError::Exhausted(net("10.128.0.0/29"))));
    }

    #[test]
    fn released_address_is_reused_only_after_wrapping() {
        let mut ipam = Ipam::new(net("10.128.0.0/29"), None);
        let a = ipam.allocate().unwrap();
        let b = ipam.allocate().unwrap();
        ipam.release(a);
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 128, 0, 4));
        for _ in 0..2 {
            ipam.allocate().unwrap();
        }
        assert_eq!(ipam.allocate().unwrap(), a, "wraps to the freed address");
        assert_ne!(a, b);
    }

    #[test]
    fn resumes_after_the_persisted_last_address() {
        let mut ipam = Ipam::new(net("10.128.2.0/23"), Some(Ipv4Addr::new(10, 128, 2, 9)));
        ipam.reserve(Ipv4Addr::new(10, 128, 2, 9)).unwrap();
        assert_eq!(ipam.allocate().unwrap(), Ipv4Addr::new(10, 128, 2, 10));
        assert_eq!(ipam.last(), Some(Ipv4Addr::new(10, 128, 2, 10)));
    }

    #[test]
    fn reserve_rejects_foreign_and_special_addresses() {
        let mut ipam = Ipam::new(net("10.128.0.0/23"), None);
        for ip in ["10.128.0.0", "10.128.0.1", "10.128.1.255", "10.129.0.5"] {
            assert!(ipam.reserve(ip.parse().unwrap()).is_err(), "{ip}");
        }
    }
}
