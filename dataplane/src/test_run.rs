//! BPF_PROG_TEST_RUN for TC and XDP programs: runs a loaded program on a frame the
//! caller builds, without attaching it anywhere (aya 0.13 has no wrapper for it).

use std::os::fd::{AsFd, AsRawFd};

use anyhow::{bail, Result};

/// `bpf(2)` command number of BPF_PROG_TEST_RUN (`enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// `struct __sk_buff` (linux/bpf.h), the context of a TC program. A test run accepts
/// only `mark`, `priority`, `ingress_ifindex`, `ifindex`, `cb`, `tstamp`, `wire_len`,
/// `gso_segs`, `gso_size` and `hwtstamp`; the rest must be zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkBuff {
    pub len: u32,
    pub pkt_type: u32,
    pub mark: u32,
    pub queue_mapping: u32,
    pub protocol: u32,
    pub vlan_present: u32,
    pub vlan_tci: u32,
    pub vlan_proto: u32,
    pub priority: u32,
    pub ingress_ifindex: u32,
    /// The device the skb is on: must exist in the caller's network namespace (0 or 1:
    /// loopback).
    pub ifindex: u32,
    pub tc_index: u32,
    pub cb: [u32; 5],
    pub hash: u32,
    pub tc_classid: u32,
    pub data: u32,
    pub data_end: u32,
    pub napi_id: u32,
    pub family: u32,
    pub remote_ip4: u32,
    pub local_ip4: u32,
    pub remote_ip6: [u32; 4],
    pub local_ip6: [u32; 4],
    pub remote_port: u32,
    pub local_port: u32,
    pub data_meta: u32,
    pub flow_keys: u64,
    pub tstamp: u64,
    pub wire_len: u32,
    pub gso_segs: u32,
    pub sk: u64,
    pub gso_size: u32,
    pub tstamp_type: u8,
    pub _pad: [u8; 3],
    pub hwtstamp: u64,
}

const _: () = assert!(std::mem::size_of::<SkBuff>() == 192);
const _: () = assert!(std::mem::size_of::<TestRunAttr>() == 80);

/// Room for what a program may add to the frame (a test run copies the whole frame out).
const HEADROOM: usize = 256;

/// What one BPF_PROG_TEST_RUN call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value of the last repetition (a TC verdict, `TC_ACT_*`, or
    /// an XDP action, `XDP_*`).
    pub retval: i32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The context as the program left it (a TC program's; zero for XDP).
    pub ctx: SkBuff,
    /// Average time of one repetition, as the kernel measured it (ns).
    pub duration_ns: u32,
}

/// Runs the TC program `prog` (e.g. `SchedClassifier::fd()`) `repeat` times (0 counts
/// as 1) on `frame`, with context `ctx`. The kernel runs every repetition on the same
/// skb: what a program writes into the frame, the next repetition sees.
pub fn run(prog: impl AsFd, frame: &[u8], ctx: &SkBuff, repeat: u32) -> Result<TestRun> {
    run_with(prog, frame, Some(ctx), repeat)
}

/// Runs the XDP program `prog` `repeat` times on `frame`, received on no device in
/// particular (the kernel makes up a context on loopback).
pub fn run_xdp(prog: impl AsFd, frame: &[u8], repeat: u32) -> Result<TestRun> {
    run_with(prog, frame, None, repeat)
}

fn run_with(prog: impl AsFd, frame: &[u8], ctx: Option<&SkBuff>, repeat: u32) -> Result<TestRun> {
    let mut frame_out = vec![0u8; frame.len() + HEADROOM];
    let mut ctx_out = SkBuff::default();
    let ctx_size = if ctx.is_some() { std::mem::size_of::<SkBuff>() as u32 } else { 0 };
    let mut attr = TestRunAttr {
        prog_fd: prog.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: frame_out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: frame_out.as_mut_ptr() as u64,
        repeat,
        ctx_size_in: ctx_size,
        ctx_size_out: ctx_size,
        ctx_in: ctx.map_or(0, |c| c as *const SkBuff as u64),
        ctx_out: if ctx.is_some() { &mut ctx_out as *mut SkBuff as u64 } else { 0 },
        ..Default::default()
    };
    // SAFETY: `attr` matches the kernel's layout; every buffer it points to outlives the
    // call and has the size given next to it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        bail!("BPF_PROG_TEST_RUN on a {}-byte frame: {err}", frame.len());
    }
    frame_out.truncate(attr.data_size_out as usize);
    Ok(TestRun { retval: attr.retval as i32, frame: frame_out, ctx: ctx_out, duration_ns: attr.duration })
}
