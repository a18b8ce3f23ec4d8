//! Running a node's programs on a frame with BPF_PROG_TEST_RUN, against the node's live
//! maps: `oxsdnctl trace` (with [`Tracer`]) and the per-path cost (with
//! [`TestPrograms`] in live mode).
//!
//! A [`Tracer`] loads a second copy of the eBPF object in trace mode
//! (`oxsdn_common::trace::MODE_TRACE`) with its maps taken from the node's pin directory:
//! the copy reads the same maps the attached programs use, changes no counter and writes
//! no map but its own, unpinned `TRACE` record. It works on any pin directory whose maps
//! exist: a running agent's, or a private one created with
//! [`crate::loader::Programs::load`] and filled by a test through
//! [`crate::maps::NodeMaps`] with entries from [`crate::entries`].
//!
//! ```no_run
//! # use oxsdn_dataplane::tracer::{Ingress, Packet, Proto, Tracer};
//! let mut tracer = Tracer::load(std::path::Path::new("/sys/fs/bpf/oxsdn/node1"))?;
//! let packet = Packet::new(Proto::Tcp, "10.128.0.2".parse()?, "10.128.0.3".parse()?).ports(40000, 80);
//! let trace = tracer.trace(Ingress::Pod { in_port: 7 }, &packet.frame())?;
//! println!("{:?} after {} rules", trace.output, trace.hops.len());
//! # Ok::<(), anyhow::Error>(())
//! ```

use std::{net::Ipv4Addr, path::Path};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, MapData},
    Ebpf,
};
use etherparse::PacketBuilder;
use oxsdn_common::{
    trace::{
        hop_kind, output_kind, TraceRecord, CB_IN_PORT, CB_TUN_SRC, CB_VNI, MODE_TEST_INPUT, MODE_TRACE, REG0_SET,
        REG1_SET,
    },
    LAYOUT_VERSION,
};
use oxsdn_tables::t80_isolation::{ALLOW_EGRESS, ALLOW_INGRESS, DENY_INGRESS};
use serde::Serialize;

use crate::{
    flows::RuleRef,
    loader::{
        classifier, load_prefilter, load_programs, pinned_layout_version, FROM_POD, FROM_TUN0, FROM_TUNNEL, OBJECT,
        XDP_UNDERLAY,
    },
    maps::{self, ip_from_key, ip_key},
    test_run::{self, SkBuff, TestRun},
};

/// Name of the trace record map in the eBPF object.
const TRACE_MAP: &str = "TRACE";

/// Where a frame enters the node's pipeline, i.e. which program runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "from")]
pub enum Ingress {
    /// Sent by a pod: `from_pod`, as if on the host veth with ifindex `in_port` (its pod
    /// port).
    Pod { in_port: u32 },
    /// Sent by the node's host stack into tun0: `from_tun0`.
    Tun0,
    /// Received over VXLAN from the node with underlay address `src`: `from_tunnel`.
    Tunnel { src: Ipv4Addr, vni: u32 },
    /// Received on the underlay device as VXLAN from `src`: `xdp_underlay`, the
    /// prefilter, on the frame with its outer headers; then, if it passes, `from_tunnel`
    /// on the inner frame (which `from_underlay` or vxlan0 hand the tables the same way).
    Underlay { src: Ipv4Addr, vni: u32 },
}

/// A copy of the node's three programs, loaded for test runs with `MODE` = `mode`
/// (bits of `oxsdn_common::trace`; 0 is the live code, which updates counters and
/// connection tracking like the attached programs do).
pub struct TestPrograms {
    ebpf: Ebpf,
    mode: u32,
}

impl TestPrograms {
    /// Loads the programs against the maps pinned in `pin_dir`. Refuses a directory
    /// without a dataplane (loading would create an empty one there) or with pins of
    /// another layout version.
    pub fn load(pin_dir: &Path, mode: u32) -> Result<Self> {
        Self::load_object(OBJECT, pin_dir, mode)
    }

    /// The same with another build of the eBPF object (e.g. an earlier one, to compare
    /// costs); its maps must have this build's layout. An object without trace mode
    /// loads in live mode (`mode` 0) only.
    pub fn load_object(object: &[u8], pin_dir: &Path, mode: u32) -> Result<Self> {
        match pinned_layout_version(pin_dir) {
            None if !pin_dir.join(maps::CONFIG).exists() => {
                bail!("no dataplane is pinned in {}", pin_dir.display())
            }
            Some(found) if found != LAYOUT_VERSION => {
                bail!(
                    "the dataplane pinned in {} has layout version {found}, this build {LAYOUT_VERSION}",
                    pin_dir.display()
                )
            }
            _ => {}
        }
        Ok(TestPrograms { ebpf: load_programs(object, pin_dir, mode)?, mode })
    }

    /// Runs `frame` through the program of `ingress`, `repeat` times (see
    /// [`test_run::run`]: every repetition sees the frame as the previous one left it).
    /// From the underlay, `frame` has its outer headers ([`vxlan_frame`]) and only the
    /// prefilter runs.
    pub fn run(&mut self, ingress: Ingress, frame: &[u8], repeat: u32) -> Result<TestRun> {
        let mut ctx = SkBuff::default();
        let program = match ingress {
            Ingress::Pod { in_port } => {
                ctx.cb[CB_IN_PORT] = in_port;
                // The live code reads the port from the skb's device, which must then
                // exist here; trace mode reads cb[].
                if self.mode & MODE_TRACE == 0 {
                    ctx.ifindex = in_port;
                }
                FROM_POD
            }
            Ingress::Tun0 => FROM_TUN0,
            Ingress::Tunnel { src, vni } => {
                ctx.cb[CB_TUN_SRC] = ip_key(src);
                ctx.cb[CB_VNI] = vni;
                FROM_TUNNEL
            }
            Ingress::Underlay { .. } => {
                let fd = load_prefilter(&mut self.ebpf)?.fd()?;
                return test_run::run_xdp(fd, frame, repeat).with_context(|| format!("running {XDP_UNDERLAY}"));
            }
        };
        let fd = classifier(&mut self.ebpf, program)?.fd()?;
        test_run::run(fd, frame, &ctx, repeat).with_context(|| format!("running {program}"))
    }

    /// Each program's size after the verifier (which removes the code `MODE` disables)
    /// and after the JIT: equal sizes mean equal code.
    pub fn sizes(&mut self) -> Result<Vec<ProgramSize>> {
        [FROM_POD, FROM_TUN0, FROM_TUNNEL]
            .into_iter()
            .map(|name| {
                let info = classifier(&mut self.ebpf, name)?.info()?;
                Ok(ProgramSize {
                    name,
                    translated_bytes: info.size_translated().unwrap_or(0),
                    jited_bytes: info.size_jitted(),
                })
            })
            .collect()
    }
}

/// A loaded program's size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ProgramSize {
    pub name: &'static str,
    /// eBPF instructions after verification (8 bytes each).
    pub translated_bytes: u32,
    /// Machine code.
    pub jited_bytes: u32,
}

/// Where the pipeline sent the packet (reg2 and the tunnel fields of OpenFlow).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "to")]
pub enum Output {
    Drop,
    /// Into the node's host stack through tun0 (its ifindex).
    Tun0 {
        ifindex: u32,
    },
    /// To a local pod: its host veth (reg2) and IP.
    Pod {
        ifindex: u32,
        ip: Ipv4Addr,
    },
    /// VXLAN out of vxlan0 (its ifindex) to a node's underlay IP with a VNI.
    Tunnel {
        ifindex: u32,
        node_ip: Ipv4Addr,
        vni: u32,
    },
    /// Multicast copies to the local pods of VNID `vnid` that receive it (but the
    /// sender), and to every other node if `to_nodes` (tables 111 and 120).
    Multicast {
        vnid: u32,
        to_nodes: bool,
    },
}

/// A service translation: the packet leaves with these addresses and ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Translation {
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// TC verdicts a program returns.
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

/// XDP actions the prefilter returns.
pub const XDP_DROP: i32 = 1;
pub const XDP_PASS: i32 = 2;
/// With `--xdp-decap`: decapsulated and redirected to a pod's veth.
pub const XDP_REDIRECT: i32 = 4;

/// The name of a TC verdict.
pub fn verdict_name(verdict: i32) -> String {
    match verdict {
        TC_ACT_OK => "TC_ACT_OK".into(),
        TC_ACT_SHOT => "TC_ACT_SHOT".into(),
        TC_ACT_REDIRECT => "TC_ACT_REDIRECT".into(),
        other => format!("TC_ACT({other})"),
    }
}

/// The name of an XDP action.
pub fn xdp_action_name(action: i32) -> String {
    match action {
        XDP_DROP => "XDP_DROP".into(),
        XDP_PASS => "XDP_PASS".into(),
        XDP_REDIRECT => "XDP_REDIRECT".into(),
        other => format!("XDP({other})"),
    }
}

/// What a frame did in the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Trace {
    /// Every rule it matched, in order (what `dump-flows` would have counted).
    pub hops: Vec<RuleRef>,
    /// The source VNID table 30 routed with, if the packet got that far.
    pub reg0: Option<u32>,
    /// The destination VNID table 80 compared it with, if it got there.
    pub reg1: Option<u32>,
    /// The pipeline's decision; `None` if the program stopped before the tables (no
    /// configuration, a tunnel frame without tunnel key).
    pub output: Option<Output>,
    /// The service translation applied, if any.
    pub translation: Option<Translation>,
    /// The NetworkPolicy rules that judged it, in order: those that allowed it, and the
    /// policy a refusal is counted for (the first, by id, of those isolating the pod).
    pub policy_rules: Vec<PolicyRule>,
    /// The verdict of the last program that ran: a TC verdict (`TC_ACT_*`), or the
    /// prefilter's XDP action when it stopped the frame.
    pub verdict: i32,
    /// From the underlay: the prefilter's XDP action (`XDP_DROP`, `XDP_PASS`, or with
    /// `--xdp-decap` `XDP_REDIRECT`, the tables having run at XDP).
    pub prefilter: Option<i32>,
    /// The frame as the program left it (translated, addressed to the pod).
    #[serde(skip)]
    pub frame: Vec<u8>,
}

impl Trace {
    /// The verdict's name: the prefilter's action if it stopped the frame, else the TC
    /// verdict's.
    pub fn verdict_name(&self) -> String {
        match self.prefilter {
            Some(action) if action != XDP_PASS => xdp_action_name(action),
            _ => verdict_name(self.verdict),
        }
    }
}

/// A NetworkPolicy's verdict on a traced packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyRule {
    /// Its `hops` entry (the policy's counter slot and table 80's rule).
    pub policy: RuleRef,
    /// The policy's counter slot (`POLICY_SLOTS` names it).
    pub slot: u32,
    /// `ingress` or `egress`: the destination's policy or the source's.
    pub direction: &'static str,
    /// Allowed by the rule at `index` in the policy's `ingress` or `egress` list; else
    /// refused: no rule of any policy isolating the pod allowed it.
    pub allowed: bool,
    pub index: u32,
}

/// The node's programs in trace mode; see the module documentation.
pub struct Tracer {
    programs: TestPrograms,
    record: Array<MapData, TraceRecord>,
    /// The node's address and VXLAN port, for frames from the underlay.
    node_ip: Ipv4Addr,
    vxlan_port: u16,
}

impl Tracer {
    /// Loads the trace-mode copy against the maps pinned in `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        let mut programs = TestPrograms::load(pin_dir, MODE_TRACE | MODE_TEST_INPUT)?;
        let map = programs.ebpf.take_map(TRACE_MAP).context("the eBPF object has no trace map")?;
        let cfg = maps::pinned_node_config(pin_dir)?;
        Ok(Tracer {
            programs,
            record: Array::try_from(map)?,
            node_ip: ip_from_key(cfg.node_ip),
            vxlan_port: cfg.vxlan_port,
        })
    }

    /// Runs `frame` once through the program of `ingress`. From the underlay, `frame`
    /// is the inner frame: the tracer puts the outer headers on (to the node's address
    /// and VXLAN port), runs the prefilter, and, if it passes the frame, `from_tunnel`,
    /// with the rules of both in one trace.
    pub fn trace(&mut self, ingress: Ingress, frame: &[u8]) -> Result<Trace> {
        self.record.set(0, TraceRecord::default(), 0)?;
        let mut prefilter = None;
        if let Ingress::Underlay { src, vni } = ingress {
            let outer = vxlan_frame(src, self.node_ip, self.vxlan_port, vni, frame);
            let run = self.programs.run(ingress, &outer, 1)?;
            if run.retval != XDP_PASS {
                let record = self.record.get(&0, 0)?;
                return Ok(Trace { prefilter: Some(run.retval), ..decode(&record, run) });
            }
            prefilter = Some(run.retval);
        }
        let ingress = match ingress {
            Ingress::Underlay { src, vni } => Ingress::Tunnel { src, vni },
            other => other,
        };
        let run = self.programs.run(ingress, frame, 1)?;
        let record = self.record.get(&0, 0)?;
        Ok(Trace { prefilter, ..decode(&record, run) })
    }
}

/// `inner` in the outer headers a node puts on (RFC 7348, no UDP checksum), from
/// underlay address `src` to `dst`:`port` with VNI `vni`; the outer MACs are made up.
pub fn vxlan_frame(src: Ipv4Addr, dst: Ipv4Addr, port: u16, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut payload = vec![0x08, 0, 0, 0];
    payload.extend_from_slice(&(vni << 8).to_be_bytes());
    payload.extend_from_slice(inner);
    let outer = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src.octets(), dst.octets(), 64);
    let mut frame = Vec::new();
    outer.udp(VXLAN_SPORT, port).write(&mut frame, &payload).expect("writing into a Vec cannot fail");
    // The UDP checksum, as nodes send VXLAN: none.
    frame[40..42].copy_from_slice(&[0, 0]);
    frame
}

/// The outer UDP source port of a traced VXLAN frame (nodes pick one by flow hash).
const VXLAN_SPORT: u16 = 49152;

fn decode(r: &TraceRecord, run: TestRun) -> Trace {
    let hops = r.hop[..(r.hops as usize).min(r.hop.len())]
        .iter()
        .filter_map(|h| match h.kind {
            hop_kind::NODE_WIDE => Some(RuleRef::NodeWide { rule: h.rule }),
            hop_kind::POD => Some(RuleRef::Pod { ip: h.key, rule: h.rule }),
            hop_kind::REMOTE_NODE => Some(RuleRef::RemoteNode { slot: h.key, rule: h.rule }),
            hop_kind::SERVICE => Some(RuleRef::Service { slot: h.key, rule: h.rule }),
            hop_kind::POLICY => Some(RuleRef::Policy { slot: h.key & 0xffff, rule: h.rule }),
            hop_kind::EGRESS => Some(RuleRef::Egress { slot: h.key, rule: h.rule }),
            _ => None,
        })
        .collect();
    let policy_rules = r.hop[..(r.hops as usize).min(r.hop.len())]
        .iter()
        .filter(|h| h.kind == hop_kind::POLICY)
        .map(|h| {
            let slot = h.key & 0xffff;
            PolicyRule {
                policy: RuleRef::Policy { slot, rule: h.rule },
                slot,
                direction: if [ALLOW_INGRESS, DENY_INGRESS].contains(&h.rule) { "ingress" } else { "egress" },
                allowed: [ALLOW_INGRESS, ALLOW_EGRESS].contains(&h.rule),
                index: h.key >> 16,
            }
        })
        .collect();
    let output = (r.decided != 0).then(|| match r.output {
        output_kind::TUN0 => Output::Tun0 { ifindex: r.ifindex },
        output_kind::POD => Output::Pod { ifindex: r.ifindex, ip: ip_from_key(r.pod_ip) },
        output_kind::TUNNEL => Output::Tunnel { ifindex: r.ifindex, node_ip: ip_from_key(r.node_ip), vni: r.vni },
        output_kind::MULTICAST => Output::Multicast { vnid: r.vni, to_nodes: r.ifindex != 0 },
        _ => Output::Drop,
    });
    let translation = (r.decided != 0 && r.xlate_active != 0).then(|| Translation {
        src: ip_from_key(r.xlate_src),
        sport: r.xlate_sport,
        dst: ip_from_key(r.xlate_dst),
        dport: r.xlate_dport,
    });
    Trace {
        hops,
        reg0: (r.regs_set & REG0_SET != 0).then_some(r.reg0),
        reg1: (r.regs_set & REG1_SET != 0).then_some(r.reg1),
        output,
        translation,
        policy_rules,
        verdict: run.retval,
        prefilter: None,
        frame: run.frame,
    }
}

/// Protocols a [`Packet`] can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    /// An echo request.
    Icmp,
    /// A request for the destination address.
    Arp,
}

/// A packet description, turned into an Ethernet frame by [`Packet::frame`]: a TCP SYN,
/// a UDP datagram, an ICMP echo request or an ARP request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    pub proto: Proto,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

/// `0a:58:` + the IP, the MAC oxsdn gives a pod.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

/// Payload of the UDP, TCP and ICMP frames (a trace should not look like an empty probe
/// to a reader of the frame).
const PAYLOAD: &[u8] = b"oxsdn-trace";

impl Packet {
    /// From `src` to `dst`, the MACs those addresses have as pods, ports 0.
    pub fn new(proto: Proto, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Packet { proto, src, dst, sport: 0, dport: 0, src_mac: pod_mac(src), dst_mac: pod_mac(dst) }
    }

    pub fn ports(self, sport: u16, dport: u16) -> Self {
        Packet { sport, dport, ..self }
    }

    pub fn macs(self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Self {
        Packet { src_mac, dst_mac, ..self }
    }

    pub fn frame(&self) -> Vec<u8> {
        if self.proto == Proto::Arp {
            return arp_request(self.src_mac, self.src, self.dst);
        }
        let ip = PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ipv4(self.src.octets(), self.dst.octets(), 64);
        let mut frame = Vec::new();
        let written = match self.proto {
            Proto::Tcp => ip.tcp(self.sport, self.dport, 1, 64240).syn().write(&mut frame, PAYLOAD),
            Proto::Udp => ip.udp(self.sport, self.dport).write(&mut frame, PAYLOAD),
            Proto::Icmp | Proto::Arp => ip.icmpv4_echo_request(1, 1).write(&mut frame, PAYLOAD),
        };
        written.expect("writing into a Vec cannot fail");
        frame
    }
}

/// A broadcast ARP request from `spa` (MAC `sha`) for `tpa`.
fn arp_request(sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_frames_the_parser_reads() {
        let src = Ipv4Addr::new(10, 128, 0, 2);
        let dst = Ipv4Addr::new(172, 30, 0, 1);
        let tcp = Packet::new(Proto::Tcp, src, dst).ports(40000, 80).frame();
        assert_eq!(&tcp[0..6], &pod_mac(dst));
        assert_eq!(&tcp[12..14], &[0x08, 0x00]);
        assert_eq!(tcp[14 + 9], 6);
        assert_eq!(&tcp[14 + 12..14 + 16], &src.octets());
        assert_eq!(&tcp[34..38], &[0x9c, 0x40, 0, 80]);
        let arp = Packet::new(Proto::Arp, src, dst).frame();
        assert_eq!(arp.len(), 42);
        assert_eq!(&arp[12..14], &[0x08, 0x06]);
        assert_eq!(&arp[28..32], &src.octets());
        assert_eq!(&arp[38..42], &dst.octets());
    }

    #[test]
    fn decodes_a_record() {
        let mut r =
            TraceRecord { hops: 2, decided: 1, output: output_kind::TUNNEL, ifindex: 4, vni: 7, ..Default::default() };
        r.node_ip = ip_key(Ipv4Addr::new(192, 168, 0, 2));
        r.hop[0] = oxsdn_common::trace::TraceHop { kind: hop_kind::NODE_WIDE, rule: 5, key: 0 };
        r.hop[1] = oxsdn_common::trace::TraceHop { kind: hop_kind::REMOTE_NODE, rule: 2, key: 3 };
        r.regs_set = REG0_SET;
        r.reg0 = 7;
        let run = TestRun { retval: TC_ACT_REDIRECT, frame: vec![], ctx: SkBuff::default(), duration_ns: 0 };
        let t = decode(&r, run);
        assert_eq!(t.hops, vec![RuleRef::NodeWide { rule: 5 }, RuleRef::RemoteNode { slot: 3, rule: 2 }]);
        assert_eq!(t.output, Some(Output::Tunnel { ifindex: 4, node_ip: Ipv4Addr::new(192, 168, 0, 2), vni: 7 }));
        assert_eq!((t.reg0, t.reg1, t.translation), (Some(7), None, None));
    }
}
