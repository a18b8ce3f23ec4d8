//! Loading the eBPF programs, with their maps pinned in the node's bpffs directory, and
//! attaching them: `from_tun0` on tun0's TC egress, `from_tunnel` on vxlan0's TC
//! ingress, `from_underlay` on the underlay device's TC ingress and `xdp_underlay` on its
//! XDP hook, `from_pod` on the TC ingress of every pod's host-side veth. Attachments are
//! tcx and XDP links pinned under `links/`, so the dataplane keeps forwarding while no
//! agent runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpFlags,
    },
    Ebpf, EbpfLoader,
};
use oxsdn_common::LAYOUT_VERSION;

use crate::{
    health,
    maps::{self, NodeMaps},
    netdev,
    prefilter::{self, PrefilterMode, XdpMode},
};

pub(crate) static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oxsdn-ebpf.o"));

pub(crate) const FROM_POD: &str = "from_pod";
pub(crate) const FROM_TUN0: &str = "from_tun0";
pub(crate) const FROM_TUNNEL: &str = "from_tunnel";
const FROM_UNDERLAY: &str = "from_underlay";
pub(crate) const XDP_UNDERLAY: &str = "xdp_underlay";
/// The link pin of the underlay device's program (named for its role: the device is
/// whichever holds the node's address).
const UNDERLAY_PIN: &str = "underlay";
/// The global selecting trace mode (`oxsdn_common::trace`).
const MODE: &str = "MODE";

pub struct Programs {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl Programs {
    /// Loads the programs. Maps already pinned in `pin_dir` by an agent of the same
    /// layout version are reused (state and counters survive restarts); pins of another
    /// version are removed first, so old and new layouts never mix.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(pin_dir.join("links")).with_context(|| format!("creating {}", pin_dir.display()))?;
        if let Some(found) = pinned_layout_version(pin_dir) {
            if found != LAYOUT_VERSION {
                tracing::warn!(
                    found,
                    expected = LAYOUT_VERSION,
                    "pinned dataplane has another layout version; rebuilding it"
                );
                remove_pins(pin_dir)?;
                std::fs::create_dir_all(pin_dir.join("links"))?;
                crate::metrics::global().dataplane_rebuilt();
            }
        }
        let mut ebpf = load_programs(OBJECT, pin_dir, 0)?;
        classifier(&mut ebpf, FROM_UNDERLAY)?.load().with_context(|| format!("loading program {FROM_UNDERLAY}"))?;
        Ok(Programs { ebpf, pin_dir: pin_dir.to_path_buf() })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn maps(&self) -> Result<NodeMaps> {
        NodeMaps::open(&self.pin_dir)
    }

    /// Attaches `from_tun0` to tun0's egress.
    pub fn attach_tun0(&mut self, ifname: &str) -> Result<()> {
        self.attach(FROM_TUN0, ifname, ifname, TcAttachType::Egress)
    }

    /// Attaches `from_tunnel` to vxlan0's ingress.
    pub fn attach_vxlan0(&mut self, ifname: &str) -> Result<()> {
        self.attach(FROM_TUNNEL, ifname, ifname, TcAttachType::Ingress)
    }

    /// Attaches `from_underlay` to the ingress of the underlay device `ifname`, or, with
    /// None, only removes it from where an earlier agent put it. Always a fresh link:
    /// the device holding the node's address may have changed since, and while there is
    /// no program there, overlay frames take vxlan0, which is only slower.
    pub fn attach_underlay(&mut self, ifname: Option<&str>) -> Result<()> {
        remove_if_exists(&self.link_pin(UNDERLAY_PIN))?;
        match ifname {
            Some(ifname) => self.attach(FROM_UNDERLAY, ifname, UNDERLAY_PIN, TcAttachType::Ingress),
            None => Ok(()),
        }
    }

    /// Attaches `xdp_underlay` (the prefilter) to the XDP hook of the underlay device
    /// (name, ifindex) in `mode`, or, with None, `Off` or `Auto` where it attaches none
    /// (`PrefilterMode::attempts`), only removes it from where an earlier agent put it;
    /// returns the mode the kernel runs it in. A link an earlier
    /// agent pinned on the same device, in a mode `mode` accepts, gets the new program
    /// atomically (no moment without a prefilter); otherwise the old link goes first
    /// (a device has one XDP program, and native and generic ones cannot coexist) and
    /// frames meanwhile meet only the TC programs, which drop the same.
    pub fn attach_prefilter(&mut self, device: Option<(&str, u32)>, mode: PrefilterMode) -> Result<Option<XdpMode>> {
        let pin = self.link_pin(prefilter::PIN);
        let device = device.filter(|_| mode != PrefilterMode::Off);
        let veth = match device {
            Some((_, ifindex)) => prefilter::is_veth(ifindex)?,
            None => false,
        };
        if let Some((ifname, ifindex)) = device.filter(|_| pin.exists()) {
            let running = match health::pinned_xdp_link(&pin) {
                Ok(link) if link.ifindex == ifindex => prefilter::xdp_mode(ifindex)?,
                _ => None,
            };
            if let Some(running) = running.filter(|m| mode.accepts(*m, veth)) {
                let link = FdLink::from(PinnedLink::from_pin(&pin)?);
                let program = load_prefilter(&mut self.ebpf)?;
                let id = program
                    .attach_to_link(XdpLink::try_from(link)?)
                    .with_context(|| format!("updating the XDP link on {ifname}"))?;
                drop(program.take_link(id)?);
                return Ok(Some(running));
            }
        }
        health::detach_pinned_link(&pin)?;
        let Some((ifname, ifindex)) = device else { return Ok(None) };
        if mode.attempts(veth).is_empty() {
            tracing::info!(device = ifname, "a veth: no XDP prefilter unless asked for (--prefilter native|generic)");
            return Ok(None);
        }
        let program = load_prefilter(&mut self.ebpf)?;
        let mut failure = None;
        for attached in mode.attempts(veth) {
            let flags = match attached {
                XdpMode::Native => XdpFlags::DRV_MODE,
                XdpMode::Generic => XdpFlags::SKB_MODE,
            };
            match program.attach_to_if_index(ifindex, flags) {
                Ok(id) => {
                    let link = FdLink::try_from(program.take_link(id)?)?;
                    link.pin(&pin).with_context(|| format!("pinning the XDP link of {ifname}"))?;
                    return Ok(Some(*attached));
                }
                Err(e) => {
                    tracing::info!(device = ifname, mode = %attached, error = %e, "XDP attach failed");
                    failure = Some(e);
                }
            }
        }
        let e = failure.expect("at least one attempt");
        if mode == PrefilterMode::Auto {
            tracing::info!(device = ifname, error = %e, "no XDP in the driver: no prefilter");
            return Ok(None);
        }
        Err(e).with_context(|| format!("attaching {XDP_UNDERLAY} to {ifname} ({mode:?})"))
    }

    /// Attaches `from_pod` to the ingress of a pod's host-side veth.
    pub fn attach_pod_port(&mut self, host_veth: &str) -> Result<()> {
        self.attach(FROM_POD, host_veth, host_veth, TcAttachType::Ingress)
    }

    /// Removes a pod port's link pin; the link goes with the veth (or now, if it remains).
    pub fn detach_pod_port(&self, host_veth: &str) -> Result<()> {
        remove_if_exists(&self.link_pin(host_veth))
    }

    /// The interfaces with a pinned pod port link (every link pin but tun0's, vxlan0's
    /// and the underlay's two).
    pub fn pod_port_pins(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.pin_dir.join("links"))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if ![netdev::TUN0, netdev::VXLAN0, UNDERLAY_PIN, prefilter::PIN].contains(&name.as_str()) {
                names.push(name);
            }
        }
        Ok(names)
    }

    pub fn pod_port_attached(&self, host_veth: &str) -> bool {
        self.link_pin(host_veth).exists()
    }

    fn link_pin(&self, ifname: &str) -> PathBuf {
        self.pin_dir.join("links").join(ifname)
    }

    /// Attaches program `name` to `ifname`, its link pinned as `pin_name`. An existing
    /// pinned link (left by a previous agent) gets the new program atomically instead,
    /// so traffic never sees a moment without a program.
    fn attach(&mut self, name: &'static str, ifname: &str, pin_name: &str, direction: TcAttachType) -> Result<()> {
        let pin = self.link_pin(pin_name);
        let program = classifier(&mut self.ebpf, name)?;
        if pin.exists() {
            if let Ok(existing) = PinnedLink::from_pin(&pin) {
                let link = SchedClassifierLink::try_from(FdLink::from(existing))?;
                let id = program.attach_to_link(link).with_context(|| format!("updating the link on {ifname}"))?;
                // The pin keeps the link; this process's handle on it can go.
                drop(program.take_link(id)?);
                crate::metrics::global().program_loaded(name, true);
                return Ok(());
            }
            std::fs::remove_file(&pin)?;
        }
        let id = program.attach(ifname, direction).with_context(|| format!("attaching {name} to {ifname}"))?;
        let link = FdLink::try_from(program.take_link(id)?)?;
        link.pin(&pin).with_context(|| format!("pinning the link of {ifname}"))?;
        crate::metrics::global().program_loaded(name, false);
        Ok(())
    }
}

/// Loads `object` with `MODE` = `mode` (0: the live programs), its maps pinned in or
/// reused from `pin_dir`, and loads its programs into the kernel (attaching none). In
/// live mode `MODE` keeps the object's own 0, so an object built without trace mode
/// loads too.
pub(crate) fn load_programs(object: &[u8], pin_dir: &Path, mode: u32) -> Result<Ebpf> {
    if object.is_empty() {
        bail!("this build has no eBPF programs (built without the nightly toolchain or bpf-linker): run scripts/setup.sh and build again");
    }
    let mut loader = EbpfLoader::new();
    loader.map_pin_path(pin_dir);
    if mode != 0 {
        loader.set_global(MODE, &mode, true);
    }
    let mut ebpf = loader.load(object).context("loading the eBPF object")?;
    for name in [FROM_POD, FROM_TUN0, FROM_TUNNEL] {
        classifier(&mut ebpf, name)?.load().with_context(|| format!("loading program {name}"))?;
    }
    Ok(ebpf)
}

/// The prefilter of `ebpf`, loaded into the kernel on first use (a trace or test run of
/// another program need not wait for its verification).
pub(crate) fn load_prefilter(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    let Some(program) = ebpf.program_mut(XDP_UNDERLAY) else {
        bail!("program {XDP_UNDERLAY} missing from the eBPF object")
    };
    let program: &mut Xdp = program.try_into()?;
    if program.fd().is_err() {
        program.load().with_context(|| format!("loading program {XDP_UNDERLAY}"))?;
    }
    Ok(program)
}

pub(crate) fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let Some(program) = ebpf.program_mut(name) else { bail!("program {name} missing from the eBPF object") };
    Ok(program.try_into()?)
}

/// The layout version stamped in pinned maps of an earlier agent, if any.
pub(crate) fn pinned_layout_version(pin_dir: &Path) -> Option<u32> {
    if !pin_dir.join(maps::CONFIG).exists() {
        return None;
    }
    match maps::pinned_node_config(pin_dir) {
        Ok(cfg) if cfg.layout_version == 0 => None,
        Ok(cfg) => Some(cfg.layout_version),
        // A config we cannot even open as ours is from another layout.
        Err(_) => Some(0),
    }
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes a node's pins (maps and links): the dataplane state goes with them.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(pin_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", pin_dir.display()))
        }
        _ => Ok(()),
    }
}
