//! Leaving the cluster network: pods' traffic to the outside enters the node's host
//! stack through tun0 (tables 100 -> 101 -> tun0) and leaves with the node's address.
//! The source translation is the kernel's MASQUERADE, programmed with nftables in a
//! table of our own (`ip oxsdn`), as OpenShift's `OPENSHIFT-MASQUERADE` chain did it
//! with iptables; conntrack turns the replies back to the pod. The table is rewritten
//! whole and atomically, so programming it twice is the same as once.

use std::borrow::Cow;

use anyhow::{Context, Result};
use ipnetwork::Ipv4Network;
use nftables::{
    batch::Batch,
    expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix},
    helper::apply_ruleset,
    schema::{Chain, NfListObject, Rule, Table},
    stmt::{Match, Operator, Statement},
    types::{NfChainPolicy, NfChainType, NfFamily, NfHook},
};

const TABLE: &str = "oxsdn";
const CHAIN: &str = "masquerade";
/// The kernel's "srcnat" priority for NAT chains on postrouting.
const SRCNAT_PRIORITY: i32 = 100;

fn table() -> NfListObject<'static> {
    NfListObject::Table(Table { family: NfFamily::IP, name: TABLE.into(), handle: None })
}

pub(crate) fn ip_field(field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(PayloadField {
        protocol: "ip".into(),
        field: field.into(),
    })))
}

pub(crate) fn prefix(net: Ipv4Network) -> Expression<'static> {
    Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(Expression::String(net.network().to_string().into())),
        len: net.prefix() as u32,
    }))
}

pub(crate) fn matches(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

/// Masquerades what pods send out of the cluster network, except through tun0.
pub fn install_masquerade(cluster_network: Ipv4Network, tun0: &str) -> Result<()> {
    let mut batch = Batch::new();
    // add + delete + add: the table exists afterwards with exactly these contents,
    // whether or not an earlier agent left one.
    batch.add(table());
    batch.delete(table());
    batch.add(table());
    batch.add(NfListObject::Chain(Chain {
        family: NfFamily::IP,
        table: TABLE.into(),
        name: CHAIN.into(),
        _type: Some(NfChainType::NAT),
        hook: Some(NfHook::Postrouting),
        prio: Some(SRCNAT_PRIORITY),
        policy: Some(NfChainPolicy::Accept),
        ..Default::default()
    }));
    let expr = vec![
        matches(ip_field("saddr"), Operator::EQ, prefix(cluster_network)),
        matches(ip_field("daddr"), Operator::NEQ, prefix(cluster_network)),
        matches(
            Expression::Named(NamedExpression::Meta(Meta { key: MetaKey::Oifname })),
            Operator::NEQ,
            Expression::String(tun0.to_string().into()),
        ),
        Statement::Masquerade(None),
    ];
    batch.add(NfListObject::Rule(Rule {
        family: NfFamily::IP,
        table: TABLE.into(),
        chain: CHAIN.into(),
        expr: Cow::Owned(expr),
        handle: None,
        index: None,
        comment: Some("oxsdn: pods leaving the cluster network take the node's address".into()),
    }));
    apply_ruleset(&batch.to_nftables()).context("programming the masquerade rule with nft")
}

/// Removes our nftables table (uninstall; a plain stop leaves it for the next agent).
pub fn remove_masquerade() -> Result<()> {
    let mut batch = Batch::new();
    batch.add(table());
    batch.delete(table());
    apply_ruleset(&batch.to_nftables()).context("removing the oxsdn nftables table")
}

/// The host must forward between tun0 and the underlay (OpenShift 3.x refused to start
/// without it; 4.x set it).
pub fn enable_forwarding() -> Result<()> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling net.ipv4.ip_forward")
}
