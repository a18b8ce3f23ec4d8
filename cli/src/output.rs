//! Printing records the way `oc get` does.

use std::io::Write;

use anyhow::Result;
use oxsdn_controller::{HostSubnet, NetNamespace, Service};
use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// A JSON array of the records.
    Json,
}

/// Columns as kubectl aligns them: each but the last padded to its widest cell plus 3
/// spaces, and to at least 10 characters.
fn table(out: &mut dyn Write, headers: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            let widest = rows.iter().map(|r| r[i].len()).chain([headers[i].len()]).max().unwrap_or(0);
            (widest + 3).max(10)
        })
        .collect();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                line.push_str(&format!("{cell:<width$}", width = widths[i]));
            } else {
                line.push_str(cell);
            }
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// Prints `records` as a table (saying so on stderr when there are none, like kubectl)
/// or as JSON.
fn print<T: Serialize>(
    out: &mut dyn Write,
    records: &[T],
    format: Format,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, records)?;
            writeln!(out)?;
        }
        Format::Table if records.is_empty() => eprintln!("No resources found."),
        Format::Table => table(out, headers, &records.iter().map(row).collect::<Vec<_>>())?,
    }
    Ok(())
}

pub fn print_netnamespaces(out: &mut dyn Write, records: &[NetNamespace], format: Format) -> Result<()> {
    print(out, records, format, &["NAME", "NETID"], |ns| vec![ns.name.clone(), ns.netid.to_string()])
}

pub fn print_hostsubnets(out: &mut dyn Write, records: &[HostSubnet], format: Format) -> Result<()> {
    print(out, records, format, &["NAME", "HOST", "HOST IP", "SUBNET"], |hs| {
        vec![hs.host.clone(), hs.host.clone(), hs.host_ip.to_string(), hs.subnet.to_string()]
    })
}

/// How many endpoints a table cell names before summing up the rest, as `oc get
/// endpoints` does; `-o json` has them all.
const ENDPOINTS_SHOWN: usize = 3;

/// `oc get svc` columns, with the project (`NAMESPACE`) first if `with_project`, and the
/// endpoints last: `PORT(S)` as `port/PROTO` or `port:target/PROTO`, `ENDPOINTS` as IPs
/// or `<none>`.
pub fn print_services(out: &mut dyn Write, records: &[Service], format: Format, with_project: bool) -> Result<()> {
    let headers = ["NAMESPACE", "NAME", "CLUSTER-IP", "PORT(S)", "ENDPOINTS"];
    let skip = usize::from(!with_project);
    print(out, records, format, &headers[skip..], |s| {
        let ports: Vec<String> = s.ports.iter().map(|p| p.to_string()).collect();
        let row = [s.project.clone(), s.name.clone(), s.cluster_ip.to_string(), ports.join(","), endpoints_cell(s)];
        row[skip..].to_vec()
    })
}

fn endpoints_cell(s: &Service) -> String {
    if s.endpoints.is_empty() {
        return "<none>".into();
    }
    let shown: Vec<String> = s.endpoints.iter().take(ENDPOINTS_SHOWN).map(|ip| ip.to_string()).collect();
    let mut cell = shown.join(",");
    if s.endpoints.len() > ENDPOINTS_SHOWN {
        cell.push_str(&format!(" + {} more...", s.endpoints.len() - ENDPOINTS_SHOWN));
    }
    cell
}
