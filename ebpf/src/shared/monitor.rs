//! The monitor's side of the live programs (`oxsdn_common::monitor`): a verdict becomes
//! a `MonitorEvent` in `MONITOR_EVENTS` while a monitor's lease runs and the CPU's token
//! bucket has credit; otherwise it is counted as suppressed (or, with no monitor, costs
//! the load of `MONITOR_CONFIG.flags` and a branch).

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use oxsdn_common::{
    monitor::{MonitorEvent, L3_ARP, L3_IPV4, L3_OTHER, NO_RULE, WATCH_DROPS, WATCH_FORWARDS},
    trace::output_kind,
};
use oxsdn_tables::{frame::L3, Env, Packet};

use crate::shared::{
    maps::{MONITOR_BUDGET, MONITOR_CONFIG, MONITOR_EVENTS},
    output::Decision,
};

/// What `MonitorEvent.proto` says of ARP (no IP protocol has this number).
const PROTO_ARP: u8 = 0xff;

/// Reports the verdict `d` on `p` (for a drop, by `rule`) if a monitor wants it (drops,
/// or forwards too); the live programs only.
#[inline(always)]
pub fn report<E: Env>(p: &Packet<E>, d: &Decision, rule: u32) {
    let Some(config) = MONITOR_CONFIG.get(0) else { return };
    let wanted = if d.kind == output_kind::DROP { WATCH_DROPS } else { WATCH_FORWARDS };
    if config.flags & wanted == 0 {
        return;
    }
    emit(p, d, rule);
}

/// The rare part, out of line so the common path stays one load and a branch. It
/// writes the event into the ring buffer's reservation in place: an event built on
/// the stack first would add its size to the deepest call chain's stack.
#[inline(never)]
fn emit<E: Env>(p: &Packet<E>, d: &Decision, rule: u32) {
    let Some(config) = MONITOR_CONFIG.get(0) else { return };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if now >= config.lease_until {
        return;
    }
    let Some(budget) = MONITOR_BUDGET.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's entry; only this CPU writes it while the program runs.
    let budget = unsafe { &mut *budget };
    let credit = (budget.credit_ns + now.saturating_sub(budget.last_ns)).min(config.max_credit_ns);
    budget.last_ns = now;
    if credit < config.cost_ns {
        budget.credit_ns = credit;
        budget.suppressed += 1;
        return;
    }
    budget.credit_ns = credit - config.cost_ns;
    let Some(mut entry) = MONITOR_EVENTS.reserve::<MonitorEvent>(0) else {
        budget.suppressed += 1;
        return;
    };
    // SAFETY: the reservation is a MonitorEvent's size; every field is written below
    // before it is submitted.
    let e = unsafe { &mut *entry.as_mut_ptr() };
    let f = p.frame;
    let (l3, src, dst, proto) = match f.l3 {
        L3::Ipv4 => (L3_IPV4, f.ipv4.src, f.ipv4.dst, f.ipv4.proto),
        L3::Arp => (L3_ARP, f.arp.spa, f.arp.tpa, PROTO_ARP),
        L3::Other => (L3_OTHER, 0, 0, 0),
    };
    let (sport, dport) = if l3 == L3_IPV4 { (f.ipv4.sport, f.ipv4.dport) } else { (0, 0) };
    e.time_ns = now;
    e.output = d.kind;
    e.rule = if d.kind == output_kind::DROP { rule } else { NO_RULE };
    e.port = p.port;
    e.ingress = p.ingress;
    e.owner = p.owner;
    e.reg0 = p.reg0;
    e.reg1 = p.reg1;
    e.src = src;
    e.dst = dst;
    e.sport = sport;
    e.dport = dport;
    e.proto = proto;
    e.l3 = l3;
    e._pad = 0;
    e.len = f.len;
    e.out_ifindex = d.ifindex;
    e.out_ip = d.ip;
    e.vni = d.vni;
    // SAFETY: plain helper call.
    e.cpu = unsafe { bpf_get_smp_processor_id() };
    entry.submit(0);
    budget.emitted += 1;
}
