//! Node subnet allocation in OpenShift order.
//!
//! A cluster network with prefix length `p` and `h` host bits per node holds
//! `2^s` node subnets, `s = 32 - p - h`, numbered by an `s`-bit index. The plain layout
//! puts index `n` right above the host bits. OpenShift's master instead hands out
//! subnets in an order that keeps dotted-quad addresses easy to tell apart: when `h` is
//! not a multiple of 8 and the subnet bits extend past the octet holding the top host
//! bits (the "shared" octet), the index is rotated left by `r = 8 - h % 8` bits within
//! its `s` bits. The low bits of the index then land on whole octets and its top `r` bits
//! in the shared octet, so every subnet whose shared-octet bits are zero is used before
//! any other. For 10.128.0.0/14 with 9 host bits (`r` = 7): 10.128.0.0/23,
//! 10.129.0.0/23, 10.130.0.0/23, 10.131.0.0/23, 10.128.2.0/23, 10.129.2.0/23, …
//!
//! OpenShift walks that order with a round-robin cursor rebuilt at every master start;
//! here an allocation takes the first subnet in the order that is not in use, which is
//! what a freshly started OpenShift master does too.

use std::{collections::HashSet, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubnetAllocator {
    network: Ipv4Network,
    host_bits: u8,
    /// Bits of the subnet index, `32 - prefix - host_bits`.
    subnet_bits: u8,
    /// Left rotation of the index within its `subnet_bits` bits (0: none).
    rotation: u8,
}

impl SubnetAllocator {
    /// Subnets of `host_bits` host bits out of `network` (whose host bits are ignored).
    pub fn new(network: Ipv4Network, host_bits: u8) -> Result<Self> {
        let prefix = network.prefix();
        if host_bits == 0 || u32::from(host_bits) + u32::from(prefix) > 32 {
            return Err(Error::InvalidConfig(format!(
                "hostSubnetLength {host_bits} does not fit in {network}: need 1 to {} host bits",
                32 - prefix
            )));
        }
        let subnet_bits = 32 - prefix - host_bits;
        // Index bits that fit in the octet holding the top host bits (8: octet-aligned).
        let shared = 8 - host_bits % 8;
        let rotation = if shared < 8 && subnet_bits > shared { shared } else { 0 };
        let network = Ipv4Network::new(network.network(), prefix).map_err(|e| Error::InvalidConfig(e.to_string()))?;
        Ok(SubnetAllocator { network, host_bits, subnet_bits, rotation })
    }

    /// How many node subnets there are.
    pub fn count(&self) -> u64 {
        1 << self.subnet_bits
    }

    /// The subnet at position `index` of the allocation order, if `index < count()`.
    pub fn nth(&self, index: u64) -> Option<Ipv4Network> {
        if index >= self.count() {
            return None;
        }
        let (s, r) = (u32::from(self.subnet_bits), u32::from(self.rotation));
        let number = if r == 0 { index } else { ((index << r) | (index >> (s - r))) & (self.count() - 1) };
        let base = u64::from(u32::from(self.network.network()));
        // base | (number << host_bits) < 2^32: number has subnet_bits bits.
        let addr = Ipv4Addr::from((base | (number << self.host_bits)) as u32);
        Ipv4Network::new(addr, 32 - self.host_bits).ok()
    }

    /// All subnets in allocation order.
    pub fn iter(&self) -> impl Iterator<Item = Ipv4Network> + '_ {
        (0..self.count()).map_while(|i| self.nth(i))
    }

    /// The first subnet in allocation order that is not in `used`.
    pub fn allocate(&self, used: &HashSet<Ipv4Network>) -> Result<Ipv4Network> {
        // Stops after at most used.len() + 1 candidates when a subnet is free.
        self.iter()
            .find(|subnet| !used.contains(subnet))
            .ok_or_else(|| Error::SubnetsExhausted(self.network.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(net: &str, host_bits: u8) -> SubnetAllocator {
        SubnetAllocator::new(net.parse().unwrap(), host_bits).unwrap()
    }

    fn order(a: &SubnetAllocator, n: usize) -> Vec<String> {
        a.iter().take(n).map(|s| s.to_string()).collect()
    }

    /// Allocates one by one as the master would until exhaustion; returns the order.
    fn allocate_all(a: &SubnetAllocator) -> Vec<String> {
        let mut used = HashSet::new();
        let mut out = Vec::new();
        while let Ok(subnet) = a.allocate(&used) {
            used.insert(subnet);
            out.push(subnet.to_string());
        }
        assert!(matches!(a.allocate(&used), Err(Error::SubnetsExhausted(_))));
        assert_eq!(out.len() as u64, a.count());
        out
    }

    #[test]
    fn default_network_order_from_the_spec() {
        let a = alloc("10.128.0.0/14", 9);
        assert_eq!(a.count(), 512);
        assert_eq!(
            order(&a, 10),
            [
                "10.128.0.0/23",
                "10.129.0.0/23",
                "10.130.0.0/23",
                "10.131.0.0/23",
                "10.128.2.0/23",
                "10.129.2.0/23",
                "10.130.2.0/23",
                "10.131.2.0/23",
                "10.128.4.0/23",
                "10.129.4.0/23",
            ]
        );
        assert_eq!(a.nth(511).unwrap().to_string(), "10.131.254.0/23");
        let all = allocate_all(&a);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 512);
    }

    // The following mirror OpenShift's own subnet allocator tests.

    #[test]
    fn octet_aligned_16_with_8_bits_is_not_rotated() {
        let a = alloc("10.1.0.0/16", 8);
        let expected: Vec<String> = (0..256).map(|n| format!("10.1.{n}.0/24")).collect();
        assert_eq!(allocate_all(&a), expected);
    }

    #[test]
    fn subnet_bits_within_one_octet_are_not_rotated() {
        // 10.1.SSSSSSHH.HHHHHHHH
        let a = alloc("10.1.0.0/16", 10);
        let expected: Vec<String> = (0..64).map(|n| format!("10.1.{}.0/22", n * 4)).collect();
        assert_eq!(allocate_all(&a), expected);
    }

    #[test]
    fn subnet_bits_into_last_octet_use_dot_zero_networks_first() {
        // 10.1.SSSSSSSS.SSHHHHHH
        let a = alloc("10.1.0.0/16", 6);
        let all = allocate_all(&a);
        for n in 0..256 {
            assert_eq!(all[n], format!("10.1.{n}.0/26"));
            assert_eq!(all[n + 256], format!("10.1.{n}.64/26"));
        }
        assert_eq!(all[512], "10.1.0.128/26");
        assert_eq!(all[1023], "10.1.255.192/26");
    }

    #[test]
    fn subnet_bits_straddling_two_octets_of_a_14() {
        // 10.000000SS.SSSSSSHH.HHHHHHHH
        let a = alloc("10.0.0.0/14", 10);
        let all = allocate_all(&a);
        for n in 0..4 {
            assert_eq!(all[n], format!("10.{n}.0.0/22"));
            assert_eq!(all[n + 4], format!("10.{n}.4.0/22"));
        }
        assert_eq!(all[8], "10.0.8.0/22");
        assert_eq!(all[255], "10.3.252.0/22");
    }

    #[test]
    fn sixteen_with_nine_bits() {
        // 10.1.SSSSSSSH.HHHHHHHH: 7 subnet bits, all in the shared octet.
        let a = alloc("10.1.0.0/16", 9);
        let expected: Vec<String> = (0..128).map(|n| format!("10.1.{}.0/23", n * 2)).collect();
        assert_eq!(allocate_all(&a), expected);
    }

    #[test]
    fn large_host_parts_and_single_subnet() {
        let a = alloc("10.1.0.0/16", 14);
        assert_eq!(allocate_all(&a), ["10.1.0.0/18", "10.1.64.0/18", "10.1.128.0/18", "10.1.192.0/18"]);
        assert_eq!(allocate_all(&alloc("10.1.0.0/16", 16)), ["10.1.0.0/16"]);
    }

    #[test]
    fn takes_first_free_in_order() {
        let a = alloc("10.128.0.0/14", 9);
        let used: HashSet<Ipv4Network> =
            ["10.128.0.0/23", "10.130.0.0/23"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(a.allocate(&used).unwrap().to_string(), "10.129.0.0/23");
    }

    #[test]
    fn rejects_impossible_sizes() {
        let net: Ipv4Network = "10.1.0.0/16".parse().unwrap();
        assert!(SubnetAllocator::new(net, 0).is_err());
        assert!(SubnetAllocator::new(net, 17).is_err());
    }
}
