//! Trace mode (`oxsdn_common::trace`): the `MODE` global and the `TRACE` record. Each
//! entry program reads `MODE` once and runs one of two copies of the pipeline, compiled
//! with and without trace code (`env::Maps<TRACE>`); `MODE` is a frozen 0 in the live
//! programs, so the verifier drops the trace copy whole. (Testing `MODE` at every rule
//! instead left a load per test and more register spills in the live code, as the
//! verifier removes branches but not the loads that fed them.)

use aya_ebpf::{macros::map, maps::Array, programs::TcContext};
use oxsdn_common::trace::{output_kind, TraceHop, TraceRecord, MAX_HOPS, MODE_TEST_INPUT, MODE_TRACE, REG0_SET};

use oxsdn_tables::Translation;

/// Set by the loader (`EbpfLoader::set_global`); read-only for the programs.
#[no_mangle]
static MODE: u32 = 0;

/// Not pinned: each load has its own, so concurrent traces never mix.
#[map]
static TRACE: Array<TraceRecord> = Array::with_max_entries(1, 0);

#[inline(always)]
fn mode() -> u32 {
    // SAFETY: reading a global the loader initialised.
    unsafe { core::ptr::read_volatile(&MODE) }
}

/// Whether this load traces instead of counting and writing state; read once, at the
/// entry (then `Frame::tracing`).
#[inline(always)]
pub fn tracing() -> bool {
    mode() & MODE_TRACE != 0
}

/// Runs the trace copy of a program or its live copy, by `MODE`. Each copy must be a
/// function of its own (`#[inline(never)]`): inlined side by side, the compiler shares
/// code between them and leaves the live copy with registers only the trace copy sets,
/// which the verifier refuses.
#[inline(always)]
pub fn by_mode<C, R>(ctx: C, traced: impl FnOnce(C) -> R, live: impl FnOnce(C) -> R) -> R {
    if tracing() {
        traced(ctx)
    } else {
        live(ctx)
    }
}

/// Whether inputs a test run cannot carry come from `cb[]`.
#[inline(always)]
pub fn test_input() -> bool {
    mode() & MODE_TEST_INPUT != 0
}

/// `cb[slot]` of the skb, read so the compiler cannot fold it with another context load
/// into one at a computed offset (which the verifier refuses).
#[inline(always)]
pub fn cb(ctx: &TcContext, slot: usize) -> u32 {
    // SAFETY: reading the skb's cb[] (slot < 5 is the callers' constant).
    unsafe { core::ptr::read_volatile(&(*ctx.skb.skb).cb[slot]) }
}

#[inline(always)]
fn record() -> Option<&'static mut TraceRecord> {
    // SAFETY: the map is private to this load and a test run is single-threaded.
    TRACE.get_ptr_mut(0).map(|r| unsafe { &mut *r })
}

/// Appends a matched rule (`kind`: `hop_kind`).
#[inline(always)]
pub fn hop(kind: u32, rule: u32, key: u32) {
    let Some(r) = record() else { return };
    let n = r.hops as usize;
    if n < MAX_HOPS {
        r.hop[n] = TraceHop { kind, rule, key };
        r.hops = n as u32 + 1;
    }
}

/// A register as the tables computed it: `REG0_SET` for reg0 (the source VNID, as
/// table 30 receives it), `REG1_SET` for reg1 (the destination VNID, as table 80 does).
#[inline(always)]
pub fn register(which: u32, value: u32) {
    if let Some(r) = record() {
        if which == REG0_SET {
            r.reg0 = value;
        } else {
            r.reg1 = value;
        }
        r.regs_set |= which;
    }
}

/// The pipeline's decision (`kind`: `output_kind`): for a pod, its veth and IP; for the
/// tunnel, vxlan0, the node's IP and the VNI; for tun0, its ifindex. Called in the
/// entry programs' match arms with plain values: an `Output` kept around for this would
/// be copied with undefined payload bytes, which the verifier refuses. Trace mode only
/// (`env::Maps::decision`).
#[inline(always)]
pub fn decision(kind: u32, ifindex: u32, ip: u32, vni: u32, xlate: &Translation) {
    let Some(r) = record() else { return };
    r.decided = 1;
    r.output = kind;
    r.ifindex = ifindex;
    if kind == output_kind::POD {
        r.pod_ip = ip;
    } else {
        r.node_ip = ip;
    }
    r.vni = vni;
    r.xlate_active = xlate.active;
    r.xlate_src = xlate.src;
    r.xlate_dst = xlate.dst;
    r.xlate_sport = xlate.sport;
    r.xlate_dport = xlate.dport;
}
