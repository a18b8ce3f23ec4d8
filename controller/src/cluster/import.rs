//! Importing values another master assigned (store-only migration from OpenShift SDN):
//! a project with the NETID of its NetNamespace, a node with the subnet of its
//! HostSubnet. Each is checked as the allocators would have chosen it, so imported and
//! allocated values never collide.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnetwork::Ipv4Network;

use super::{keys, validate_node_ip, Cluster};
use crate::{
    hostsubnets::validate_node_name,
    netnamespaces::validate_project_name,
    vnid::{GLOBAL_VNID, MAX_VNID, MIN_VNID},
    Error, HostSubnet, NetNamespace, Result,
};

impl Cluster {
    /// Creates project `name` with VNID `netid`: 0 (global) or in [10, 2^24-1]. Several
    /// projects may share a VNID (joined projects); the allocator never hands out a VNID
    /// a project holds. Importing a project that exists with this VNID changes nothing;
    /// with another, it is refused (a pod-network command changes VNIDs).
    pub fn import_netnamespace(&self, name: &str, netid: u32) -> Result<NetNamespace> {
        self.put_netid(name, netid, false)
    }

    /// Sets project `name`'s VNID to `netid` (checked as `import_netnamespace` checks it),
    /// creating the project if needed: a VNID another master changed (OpenShift's, in a
    /// migration), which the agents then apply as they apply a join or an isolation.
    pub fn follow_netid(&self, name: &str, netid: u32) -> Result<NetNamespace> {
        self.put_netid(name, netid, true)
    }

    fn put_netid(&self, name: &str, netid: u32, replace: bool) -> Result<NetNamespace> {
        validate_project_name(name)?;
        if netid != GLOBAL_VNID && !(MIN_VNID..=MAX_VNID).contains(&netid) {
            return Err(Error::Invalid(format!(
                "NETID {netid} is out of range: 0 (global) or {MIN_VNID} to {MAX_VNID}"
            )));
        }
        self.transact("netnamespaces", |a| {
            if let Some(ns) = a.netnamespaces()?.remove(name) {
                return match ns.netid == netid {
                    true => Ok(ns),
                    false if replace => {
                        let ns = NetNamespace { netid, ..ns };
                        a.put_record(&ns)?;
                        Ok(ns)
                    }
                    false => {
                        Err(Error::Invalid(format!("project {name:?} exists with NETID {}, not {netid}", ns.netid)))
                    }
                };
            }
            let id = a.next_ids(keys::PROJECT_ID_COUNTER, "project", 1)?.next().expect("one id");
            let ns = NetNamespace {
                name: name.to_owned(),
                netid,
                id,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
            };
            a.put_record(&ns)?;
            Ok(ns)
        })
    }

    /// Registers node `name` at `host_ip` with `subnet`: a subnet of the cluster network
    /// of the configured size (`hostSubnetLength` host bits), on its own boundary, that no
    /// other node's overlaps; the IP is checked as `register_node` checks it and must be
    /// no other node's. Importing a node that exists with this subnet changes nothing but
    /// its IP; with another subnet, it is refused.
    pub fn import_node(&self, name: &str, host_ip: Ipv4Addr, subnet: Ipv4Network) -> Result<HostSubnet> {
        self.put_node(name, host_ip, subnet, false)
    }

    /// Registers node `name` at `host_ip` with `subnet`, checked as `import_node` checks
    /// it, replacing the subnet the node had: one another master (OpenShift's, in a
    /// migration) assigned or changed. The agents move the node's routes as for a node
    /// deleted and added again.
    pub fn adopt_node_subnet(&self, name: &str, host_ip: Ipv4Addr, subnet: Ipv4Network) -> Result<HostSubnet> {
        self.put_node(name, host_ip, subnet, true)
    }

    fn put_node(&self, name: &str, host_ip: Ipv4Addr, subnet: Ipv4Network, replace: bool) -> Result<HostSubnet> {
        validate_node_name(name)?;
        self.transact("hostsubnets", |a| {
            let config = a.config()?;
            validate_node_ip(host_ip, &config)?;
            let prefix = 32 - config.host_subnet_length;
            if subnet.prefix() != prefix || subnet.ip() != subnet.network() {
                return Err(Error::Invalid(format!(
                    "subnet {subnet} is not a node subnet: the cluster's are /{prefix} networks (hostSubnetLength {})",
                    config.host_subnet_length
                )));
            }
            if !config.cluster_network.contains(subnet.network())
                || !config.cluster_network.contains(subnet.broadcast())
            {
                return Err(Error::Invalid(format!(
                    "subnet {subnet} is outside the cluster network {}",
                    config.cluster_network
                )));
            }
            let all = a.hostsubnets()?;
            for other in all.values().filter(|hs| hs.host != name) {
                if other.host_ip == host_ip {
                    return Err(Error::Invalid(format!("node IP {host_ip} is already used by node {:?}", other.host)));
                }
                if other.subnet.contains(subnet.network()) || subnet.contains(other.subnet.network()) {
                    return Err(Error::Invalid(format!(
                        "subnet {subnet} overlaps node {:?}'s {}",
                        other.host, other.subnet
                    )));
                }
            }
            let hs = HostSubnet { host: name.to_owned(), host_ip, subnet };
            match all.get(name) {
                Some(existing) if existing == &hs => return Ok(hs),
                Some(existing) if existing.subnet != subnet && !replace => {
                    return Err(Error::Invalid(format!(
                        "node {name:?} exists with subnet {}, not {subnet}",
                        existing.subnet
                    )))
                }
                _ => a.put_record(&hs)?,
            }
            Ok(hs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        store::testing::{on_both_stores, Kind},
        ClusterConfig,
    };

    on_both_stores!(
        projects_keep_the_netid_they_bring_and_the_allocator_avoids_it,
        nodes_keep_the_subnet_they_bring_and_overlaps_are_refused
    );

    fn cluster(kind: Kind) -> (crate::store::testing::Backing, Cluster) {
        let (backing, c) = super::super::tests::cluster_on(kind);
        c.init_config(&ClusterConfig::default()).unwrap();
        (backing, c)
    }

    fn refused(result: Result<impl std::fmt::Debug>, why: &str) {
        match result {
            Err(e) => assert!(e.to_string().contains(why), "{e} does not say {why:?}"),
            Ok(v) => panic!("accepted: {v:?}"),
        }
    }

    fn projects_keep_the_netid_they_bring_and_the_allocator_avoids_it(kind: Kind) {
        let (_b, c) = cluster(kind);
        assert_eq!(c.import_netnamespace("shop", 4242).unwrap().netid, 4242);
        assert_eq!(c.import_netnamespace("shop-joined", 4242).unwrap().netid, 4242);
        assert_eq!(c.import_netnamespace("infra", 0).unwrap().netid, 0);
        // Again: nothing changes.
        let again = c.import_netnamespace("shop", 4242).unwrap();
        assert_eq!(again, c.get_netnamespace("shop").unwrap().unwrap());
        refused(c.import_netnamespace("shop", 4243), "exists with NETID 4242");
        refused(c.import_netnamespace("x", 5), "out of range");
        refused(c.import_netnamespace("x", MAX_VNID + 1), "out of range");
        refused(c.import_netnamespace("Not_A_Name", 20), "");
        // Following another master's change: the VNID is replaced, checked the same way.
        assert_eq!(c.follow_netid("shop-joined", 4300).unwrap().netid, 4300);
        assert_eq!(c.follow_netid("created", 4301).unwrap().netid, 4301);
        refused(c.follow_netid("shop-joined", 5), "out of range");
        assert_eq!(c.get_netnamespace("shop-joined").unwrap().unwrap().netid, 4300);
        // Projects created afterwards never get an imported VNID.
        let c = c.with_vnid_range(4242, 4243);
        assert_eq!(c.ensure_netnamespace("new").unwrap().netid, 4243);
    }

    fn nodes_keep_the_subnet_they_bring_and_overlaps_are_refused(kind: Kind) {
        let (_b, c) = cluster(kind);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let net = |s: &str| s.parse::<Ipv4Network>().unwrap();
        let hs = c.import_node("n1", ip("192.168.1.1"), net("10.128.6.0/23")).unwrap();
        assert_eq!(hs.subnet, net("10.128.6.0/23"));
        refused(c.import_node("n2", ip("192.168.1.2"), net("10.128.6.0/23")), "overlaps node \"n1\"");
        refused(c.import_node("n2", ip("192.168.1.2"), net("10.128.7.0/24")), "not a node subnet");
        refused(c.import_node("n2", ip("192.168.1.2"), net("10.128.7.0/23")), "not a node subnet");
        refused(c.import_node("n2", ip("192.168.1.2"), net("10.200.0.0/23")), "outside the cluster network");
        refused(c.import_node("n2", ip("192.168.1.1"), net("10.128.8.0/23")), "already used by node \"n1\"");
        refused(c.import_node("n2", ip("10.128.0.1"), net("10.128.8.0/23")), "cluster");
        refused(c.import_node("n1", ip("192.168.1.1"), net("10.128.8.0/23")), "exists with subnet");
        // Again, with a new IP: the IP follows, the subnet stays.
        assert_eq!(c.import_node("n1", ip("192.168.1.9"), net("10.128.6.0/23")).unwrap().host_ip, ip("192.168.1.9"));
        // Another master moved n1: the subnet is replaced, checked the same way.
        refused(c.adopt_node_subnet("n1", ip("192.168.1.9"), net("10.200.0.0/23")), "outside the cluster network");
        assert_eq!(
            c.adopt_node_subnet("n1", ip("192.168.1.9"), net("10.128.8.0/23")).unwrap().subnet,
            net("10.128.8.0/23")
        );
        c.import_node("n3", ip("192.168.1.3"), net("10.128.6.0/23")).unwrap();
        refused(c.adopt_node_subnet("n1", ip("192.168.1.9"), net("10.128.6.0/23")), "overlaps node \"n3\"");
        assert_eq!(c.get_hostsubnet("n1").unwrap().unwrap().subnet, net("10.128.8.0/23"));
        // Allocated nodes never get an imported subnet.
        for i in 0..8 {
            let allocated = c.register_node(&format!("a{i}"), ip(&format!("192.168.2.{}", i + 1))).unwrap();
            assert_ne!(allocated.subnet, net("10.128.6.0/23"));
        }
    }
}
