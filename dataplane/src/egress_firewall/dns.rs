//! The resolver of `dnsName` rules: one A query over UDP to one configured server, its
//! answer validated and bounded before anything of it reaches the dataplane.
//!
//! A DNS answer decides which addresses a project may reach, so it is input from outside
//! the cluster. What is taken: a reply from the server queried (a connected socket), with
//! the query's id and question, at most `MAX_REPLY_BYTES`, within `TIMEOUT`; of it only
//! A records of class IN for the name or the CNAMEs it leads to (at most `MAX_CNAMES`
//! deep), at most `MAX_ADDRESSES`; the refresh time is the records' smallest TTL within
//! [`MIN_REFRESH`, `MAX_REFRESH`] (OpenShift: the TTL, at most 30 s).

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use simple_dns::{rdata::RData, Name, Packet, PacketFlag, Question, CLASS, QCLASS, QTYPE, RCODE, TYPE};

/// How long a query may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// The largest reply read: a UDP reply without EDNS (RFC 1035).
pub const MAX_REPLY_BYTES: usize = 512;
/// Addresses taken of one name (a rule becomes one entry per address).
pub const MAX_ADDRESSES: usize = 64;
/// CNAMEs followed from the name.
pub const MAX_CNAMES: usize = 8;
/// Bounds of the time until a name is resolved again.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
pub const MAX_REFRESH: Duration = Duration::from_secs(30);

/// What a name resolved to, and when to ask again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub addresses: BTreeSet<Ipv4Addr>,
    pub refresh: Duration,
}

/// Resolves `name`'s A records at `server`.
pub fn resolve(server: SocketAddr, name: &str) -> Result<Resolved> {
    let socket = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    // Connected: the kernel drops datagrams from any other address and port.
    socket.connect(server).with_context(|| format!("DNS server {server}"))?;
    let id: u16 = rand::random();
    let query = query(id, name)?;
    socket.send(&query)?;
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; MAX_REPLY_BYTES];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("no answer from DNS server {server} for {name:?} within {TIMEOUT:?}");
        }
        socket.set_read_timeout(Some(left))?;
        let len = match socket.recv(&mut buf) {
            Ok(len) => len,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e).with_context(|| format!("DNS server {server}")),
        };
        // Another reply (a late one to an earlier query, a forgery) is skipped.
        if let Some(answer) = answer(&buf[..len], id, name)? {
            return Ok(answer);
        }
    }
}

fn query(id: u16, name: &str) -> Result<Vec<u8>> {
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    let qname = Name::new(name).with_context(|| format!("DNS name {name:?}"))?;
    packet.questions.push(Question::new(qname, QTYPE::TYPE(TYPE::A), QCLASS::CLASS(CLASS::IN), false));
    Ok(packet.build_bytes_vec()?)
}

/// The addresses a reply gives `name`; `None` if it is not the reply to query `id` for
/// `name`; an error if it is, but refuses or is malformed.
fn answer(reply: &[u8], id: u16, name: &str) -> Result<Option<Resolved>> {
    let Ok(packet) = Packet::parse(reply) else { return Ok(None) };
    let asked = Name::new_unchecked(name);
    let ours = packet.id() == id
        && packet.has_flags(PacketFlag::RESPONSE)
        && packet.questions.len() == 1
        && packet.questions[0].qname == asked
        && packet.questions[0].qtype == QTYPE::TYPE(TYPE::A);
    if !ours {
        return Ok(None);
    }
    match packet.rcode() {
        RCODE::NoError => {}
        // The name does not exist: the rule matches no address (until it does).
        RCODE::NameError => return Ok(Some(Resolved { addresses: BTreeSet::new(), refresh: MAX_REFRESH })),
        other => bail!("DNS server refused {name:?}: {other:?}"),
    }
    // The name and the CNAMEs it leads to, in order.
    let mut names = vec![asked];
    while names.len() <= MAX_CNAMES {
        let last = names.last().expect("never empty");
        let next = packet.answers.iter().find_map(|rr| match &rr.rdata {
            RData::CNAME(target) if rr.name == *last && rr.class == CLASS::IN => Some(target.0.clone()),
            _ => None,
        });
        match next {
            Some(target) if !names.contains(&target) => names.push(target),
            _ => break,
        }
    }
    let mut addresses = BTreeSet::new();
    let mut ttl = u32::MAX;
    for rr in &packet.answers {
        if let RData::A(a) = &rr.rdata {
            if rr.class == CLASS::IN && names.contains(&rr.name) && addresses.len() < MAX_ADDRESSES {
                addresses.insert(Ipv4Addr::from(a.address));
                ttl = ttl.min(rr.ttl);
            }
        }
    }
    let refresh = Duration::from_secs(ttl.into()).clamp(MIN_REFRESH, MAX_REFRESH);
    Ok(Some(Resolved { addresses, refresh }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{rdata, ResourceRecord};

    fn reply(id: u16, qname: &str, records: Vec<ResourceRecord<'static>>) -> Vec<u8> {
        let mut packet = Packet::new_reply(id);
        packet.questions.push(Question::new(
            Name::new_unchecked(qname).into_owned(),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        packet.answers = records;
        packet.build_bytes_vec().unwrap()
    }

    fn a(name: &'static str, ip: [u8; 4], ttl: u32) -> ResourceRecord<'static> {
        ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            ttl,
            RData::A(rdata::A { address: u32::from(Ipv4Addr::from(ip)) }),
        )
    }

    fn cname(name: &'static str, target: &'static str) -> ResourceRecord<'static> {
        ResourceRecord::new(
            Name::new_unchecked(name),
            CLASS::IN,
            60,
            RData::CNAME(rdata::CNAME(Name::new_unchecked(target))),
        )
    }

    #[test]
    fn takes_the_names_a_records_with_the_smallest_ttl_bounded() {
        let data = reply(7, "x.example", vec![a("x.example", [192, 0, 2, 1], 5), a("x.example", [192, 0, 2, 2], 9)]);
        let got = answer(&data, 7, "x.example").unwrap().unwrap();
        assert_eq!(got.addresses, [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)].into());
        assert_eq!(got.refresh, Duration::from_secs(5));
        let long = reply(7, "x.example", vec![a("x.example", [192, 0, 2, 1], 86400)]);
        assert_eq!(answer(&long, 7, "x.example").unwrap().unwrap().refresh, MAX_REFRESH);
        let zero = reply(7, "x.example", vec![a("x.example", [192, 0, 2, 1], 0)]);
        assert_eq!(answer(&zero, 7, "x.example").unwrap().unwrap().refresh, MIN_REFRESH);
    }

    #[test]
    fn records_of_other_names_are_ignored_and_cnames_followed() {
        let data = reply(
            7,
            "x.example",
            vec![
                a("evil.example", [203, 0, 113, 66], 5),
                cname("x.example", "y.example"),
                a("y.example", [192, 0, 2, 3], 5),
            ],
        );
        let got = answer(&data, 7, "x.example").unwrap().unwrap();
        assert_eq!(got.addresses, [Ipv4Addr::new(192, 0, 2, 3)].into());
    }

    #[test]
    fn replies_to_other_queries_are_skipped_and_addresses_bounded() {
        let data = reply(7, "x.example", vec![a("x.example", [192, 0, 2, 1], 5)]);
        assert_eq!(answer(&data, 8, "x.example").unwrap(), None, "another id");
        assert_eq!(answer(&data, 7, "z.example").unwrap(), None, "another question");
        assert_eq!(answer(b"\x00\x07garbage", 7, "x.example").unwrap(), None, "not DNS");
        let query = query(7, "x.example").unwrap();
        assert_eq!(answer(&query, 7, "x.example").unwrap(), None, "a query, not a reply");
        let many: Vec<_> = (0..200u8).map(|i| a("x.example", [10, 0, 0, i], 5)).collect();
        let data = reply(7, "x.example", many);
        assert_eq!(answer(&data, 7, "x.example").unwrap().unwrap().addresses.len(), MAX_ADDRESSES);
    }
}
