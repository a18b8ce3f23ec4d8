//! The monitor's side of the live programs (`oxsdn_common::monitor`): a verdict becomes
//! a `MonitorEvent` in `MONITOR_EVENTS` while a monitor's lease runs and the CPU's token
//! bucket has credit; otherwise it is counted as suppressed (or, with no monitor, costs
//! the load of `MONITOR_CONFIG.flags` and a branch).

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};
use oxsdn_common::{
    monitor::{MonitorEvent, L3_ARP, L3_IPV4, L3_OTHER, NO_RULE, WATCH_DROPS, WATCH_FORWARDS},
    trace::output_kind,
};
use oxsdn_tables::{frame::L3, Verdict};

use crate::shared::maps::{MONITOR_BUDGET, MONITOR_CONFIG, MONITOR_EVENTS};

/// What `MonitorEvent.proto` says of ARP (no IP protocol has this number).
const PROTO_ARP: u8 = 0xff;

/// Reports `v` if a monitor wants it (drops, or forwards too).
#[inline(always)]
pub fn report(v: &Verdict) {
    let Some(config) = MONITOR_CONFIG.get(0) else { return };
    let wanted = if v.output == output_kind::DROP { WATCH_DROPS } else { WATCH_FORWARDS };
    if config.flags & wanted == 0 {
        return;
    }
    emit(v, config.lease_until, config.cost_ns, config.max_credit_ns);
}

/// The rare part, out of line so the common path stays one load and a branch.
#[inline(never)]
fn emit(v: &Verdict, lease_until: u64, cost_ns: u64, max_credit_ns: u64) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if now >= lease_until {
        return;
    }
    let Some(budget) = MONITOR_BUDGET.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's entry; only this CPU writes it while the program runs.
    let budget = unsafe { &mut *budget };
    let credit = (budget.credit_ns + now.saturating_sub(budget.last_ns)).min(max_credit_ns);
    budget.last_ns = now;
    if credit < cost_ns {
        budget.credit_ns = credit;
        budget.suppressed += 1;
        return;
    }
    budget.credit_ns = credit - cost_ns;
    let Some(mut entry) = MONITOR_EVENTS.reserve::<MonitorEvent>(0) else {
        budget.suppressed += 1;
        return;
    };
    let f = v.frame;
    let (l3, src, dst, proto) = match f.l3 {
        L3::Ipv4 => (L3_IPV4, f.ipv4.src, f.ipv4.dst, f.ipv4.proto),
        L3::Arp => (L3_ARP, f.arp.spa, f.arp.tpa, PROTO_ARP),
        L3::Other => (L3_OTHER, 0, 0, 0),
    };
    let (sport, dport) = if l3 == L3_IPV4 { (f.ipv4.sport, f.ipv4.dport) } else { (0, 0) };
    entry.write(MonitorEvent {
        time_ns: now,
        output: v.output,
        rule: if v.output == output_kind::DROP { v.rule } else { NO_RULE },
        port: v.port,
        ingress: v.ingress,
        owner: v.owner,
        reg0: v.reg0,
        reg1: v.reg1,
        src,
        dst,
        sport,
        dport,
        proto,
        l3,
        _pad: 0,
        len: f.len,
        out_ifindex: v.out_ifindex,
        out_ip: v.out_ip,
        vni: v.vni,
        // SAFETY: plain helper call.
        cpu: unsafe { bpf_get_smp_processor_id() },
    });
    entry.submit(0);
    budget.emitted += 1;
}
