//! `oxsdnctl status`: a node's checks (`oxsdn_dataplane::health`), printed; an error
//! (exit 1) when any fails.

use std::io::Write;

use anyhow::{bail, Result};
use oxsdn_controller::Cluster;
use oxsdn_dataplane::health::{node_status, NodePaths};

use crate::output::{write_value, Format};

pub fn status(paths: &NodePaths, cluster: Result<Cluster>, format: Format, out: &mut dyn Write) -> Result<()> {
    let status = node_status(paths, cluster);
    match format {
        Format::Json | Format::Yaml => write_value(out, &status, format)?,
        Format::Table => {
            writeln!(out, "Node:          {}", status.node)?;
            for c in &status.checks {
                let name = match c.name.strip_prefix("cni ") {
                    Some(rest) => format!("CNI {rest}:"),
                    None => format!("{}{}:", c.name[..1].to_uppercase(), &c.name[1..]),
                };
                writeln!(out, "{name:<14} {:<6} {}", if c.ok { "OK" } else { "FAILED" }, c.detail)?;
            }
        }
    }
    let failed: Vec<&str> = status.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if !failed.is_empty() {
        bail!("node {} is not healthy: {}", status.node, failed.join(", "));
    }
    Ok(())
}
