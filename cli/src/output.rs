//! Printing records the way `oc get` does.

use std::io::Write;

use anyhow::Result;
use oxsdn_controller::{HostSubnet, NetNamespace};
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
            let widest = rows
                .iter()
                .map(|r| r[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0);
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

pub fn print_netnamespaces(
    out: &mut dyn Write,
    records: &[NetNamespace],
    format: Format,
) -> Result<()> {
    print(out, records, format, &["NAME", "NETID"], |ns| {
        vec![ns.name.clone(), ns.netid.to_string()]
    })
}

pub fn print_hostsubnets(
    out: &mut dyn Write,
    records: &[HostSubnet],
    format: Format,
) -> Result<()> {
    print(
        out,
        records,
        format,
        &["NAME", "HOST", "HOST IP", "SUBNET"],
        |hs| {
            vec![
                hs.host.clone(),
                hs.host.clone(),
                hs.host_ip.to_string(),
                hs.subnet.to_string(),
            ]
        },
    )
}
