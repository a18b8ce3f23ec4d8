//! Deterministic interface names, so DEL (and the agent) can find a pod's host-side veth
//! from the attachment alone.

use sha2::{Digest, Sha256};

fn hash_prefix(container_id: &str, ifname: &str, hex_chars: usize) -> String {
    let digest = Sha256::digest(format!("{container_id}/{ifname}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..hex_chars].to_string()
}

/// Host-side veth of an attachment: `"ox"` + the first 11 hex digits of
/// `sha256(container_id + "/" + ifname)` (13 bytes, within IFNAMSIZ).
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    format!("ox{}", hash_prefix(container_id, ifname, 11))
}

/// Whether `name` has the shape of a [`host_veth_name`].
pub fn is_host_veth_name(name: &str) -> bool {
    name.len() == 13
        && name.starts_with("ox")
        && name[2..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names() {
        // echo -n 'abc/eth0' | sha256sum => 538f587a23655f38...
        let n = host_veth_name("abc", "eth0");
        assert_eq!(n, "ox538f587a236");
        assert_eq!(n.len(), 13);
        assert!(is_host_veth_name(&n));
        assert_eq!(n, host_veth_name("abc", "eth0"), "deterministic");
        assert_ne!(n, host_veth_name("abc", "eth1"));
        assert_ne!(n, host_veth_name("abd", "eth0"));
        // The separator matters: ("a/b", "c") and ("a", "b/c") cannot both be valid input, but
        // ("ab", "c") and ("a", "bc") can, and differ.
        assert_ne!(host_veth_name("ab", "c"), host_veth_name("a", "bc"));
    }

    #[test]
    fn other_names_are_not_host_veths() {
        assert!(!is_host_veth_name("oxp0123456789a"));
        assert!(!is_host_veth_name("eth0"));
        assert!(!is_host_veth_name("oxABCDEF01234"));
    }
}
