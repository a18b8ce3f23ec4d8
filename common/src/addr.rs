//! How the maps hold addresses and index pods.
//!
//! An IPv4 address is a `u32` holding the four address bytes in wire order
//! (`u32::from_ne_bytes(addr.octets())`), so the programs compare them straight from the
//! packet without byte swapping; masks the same way.

use core::net::Ipv4Addr;

use crate::MAX_POD_SLOTS;

/// An address as the maps hold it.
#[inline(always)]
pub const fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

/// The address a map value holds.
#[inline(always)]
pub const fn ip_from_key(key: u32) -> Ipv4Addr {
    let b = key.to_ne_bytes();
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// A network mask of `prefix` bits, as the maps hold it.
#[inline(always)]
pub const fn mask_key(prefix: u8) -> u32 {
    let bits = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
    bits.to_be()
}

/// Whether `addr` lies in `net`/`mask` (all three as the maps hold them).
#[inline(always)]
pub const fn in_net(addr: u32, net: u32, mask: u32) -> bool {
    addr & mask == net
}

/// The slot of a local pod with address `ip` in the node subnet with mask `local_mask`:
/// the host part of the address. It indexes `PODS` and the per-pod counters; a pod's
/// address is unique in the subnet, so is its slot.
#[inline(always)]
pub const fn pod_slot(ip: u32, local_mask: u32) -> u32 {
    u32::from_be(ip & !local_mask) & (MAX_POD_SLOTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_wire_order() {
        let ip = Ipv4Addr::new(10, 128, 2, 7);
        assert_eq!(ip_key(ip).to_ne_bytes(), [10, 128, 2, 7]);
        assert_eq!(ip_from_key(ip_key(ip)), ip);
        assert_eq!(mask_key(23).to_ne_bytes(), [255, 255, 254, 0]);
        assert_eq!(mask_key(0), 0);
        assert_eq!(mask_key(32), u32::MAX);
    }

    #[test]
    fn slots_are_host_parts() {
        let mask = mask_key(23);
        assert_eq!(pod_slot(ip_key(Ipv4Addr::new(10, 128, 2, 7)), mask), 7);
        assert_eq!(pod_slot(ip_key(Ipv4Addr::new(10, 128, 3, 1)), mask), 257);
        assert!(in_net(ip_key(Ipv4Addr::new(10, 128, 3, 1)), ip_key(Ipv4Addr::new(10, 128, 2, 0)), mask));
    }
}
