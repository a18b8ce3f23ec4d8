//! Table 252 at the outputs: the departure time of a packet the tables let out, from
//! the sending pod's egress limit and the receiving local pod's ingress limit
//! (`oxsdn_tables::t252_bandwidth`), set as the skb's delivery time.

use aya_ebpf::{helpers::bpf_skb_set_tstamp, programs::TcContext};
use oxsdn_common::trace::output_kind;
use oxsdn_tables::{
    frame::L3,
    t252_bandwidth::{self, DROP, LEAVE_NOW},
    Packet,
};

use crate::shared::{env::Maps, output::Decision};

/// `bpf_skb_set_tstamp`'s clock: a delivery time in CLOCK_MONOTONIC (uapi `bpf.h`,
/// `BPF_SKB_TSTAMP_DELIVERY_MONO`, since 6.11 also named `BPF_SKB_CLOCK_MONOTONIC`).
/// Unlike a plain timestamp it is kept across the redirect to the device's qdisc.
const TSTAMP_MONOTONIC: u32 = 1;

/// `pace`'s verdict, as a plain value across the call.
#[repr(u32)]
pub enum Pace {
    Now,
    /// It must wait: it goes out through a device's qdisc, not straight into a pod.
    Later,
    Drop,
}

/// The limits of the packet the tables sent to `d`: the sender's egress limit when it
/// came from a pod port (`from_pod`), the receiver's ingress limit when it goes to a
/// local pod; the later departure of both. A function of its own, called after the
/// tables and the policy have returned, so it adds nothing to the deepest chain.
#[inline(never)]
pub fn pace<const T: bool>(ctx: &mut TcContext, p: &Packet<Maps<T>>, d: &Decision, from_pod: bool) -> Pace {
    if p.frame.l3 != L3::Ipv4 {
        return Pace::Now;
    }
    // SAFETY: reading the skb's length on the wire (every segment's headers counted).
    let wire_len = unsafe { (*ctx.skb.skb).wire_len };
    let mut at = LEAVE_NOW;
    if from_pod {
        let src = p.frame.ipv4.src;
        at = t252_bandwidth::egress(p, p.slot(src), src, wire_len);
    }
    if at != DROP && d.kind == output_kind::POD {
        at = at.max(t252_bandwidth::ingress(p, p.slot(d.ip), d.ip, wire_len));
    }
    match at {
        LEAVE_NOW => Pace::Now,
        DROP => {
            p.env.dropped_at_output(p, p.dropped_by.get());
            Pace::Drop
        }
        // A trace records the rules and changes no packet.
        _ if T => Pace::Later,
        at => {
            // SAFETY: plain helper call on this program's skb.
            unsafe { bpf_skb_set_tstamp(ctx.skb.skb, at, TSTAMP_MONOTONIC) };
            Pace::Later
        }
    }
}
