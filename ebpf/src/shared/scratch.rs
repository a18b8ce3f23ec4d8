//! Per-CPU scratch memory for what is too large for BPF's 512-byte stack, which a
//! program shares with every function it calls: the parsed frame. A program runs to
//! its end on one CPU without being interrupted by another program's use of the slot
//! (TC runs in softirq context, preemption off).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use oxsdn_tables::frame::Frame;

/// Not pinned: scratch memory of this load.
#[map]
static FRAME: PerCpuArray<Frame> = PerCpuArray::with_max_entries(1, 0);

/// This CPU's frame slot.
#[inline(always)]
pub fn frame() -> Option<&'static mut Frame> {
    // SAFETY: this CPU's slot, used by one program run at a time (see the module doc).
    FRAME.get_ptr_mut(0).map(|f| unsafe { &mut *f })
}
