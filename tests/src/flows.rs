//! Reading `oxsdnctl dump-flows` output back, to check counters in tests.

use anyhow::{Context, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowLine {
    pub table: u8,
    pub priority: u16,
    pub n_packets: u64,
    pub n_bytes: u64,
    pub matches: String,
    pub actions: String,
}

/// Parses lines like ` table=80, n_packets=3, n_bytes=294, priority=0 actions=drop`.
pub fn parse(text: &str) -> Result<Vec<FlowLine>> {
    let mut flows = Vec::new();
    for line in text.lines().filter(|l| l.contains("table=")) {
        let (head, actions) = line.trim().split_once(" actions=").with_context(|| format!("no actions in {line:?}"))?;
        let field = |name: &str| -> Result<&str> {
            head.split(", ")
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .with_context(|| format!("no {name} in {line:?}"))
        };
        let prio_and_match = field("priority")?;
        let (priority, matches) = prio_and_match.split_once(',').unwrap_or((prio_and_match, ""));
        flows.push(FlowLine {
            table: field("table")?.parse()?,
            n_packets: field("n_packets")?.parse()?,
            n_bytes: field("n_bytes")?.parse()?,
            priority: priority.parse()?,
            matches: matches.to_string(),
            actions: actions.to_string(),
        });
    }
    Ok(flows)
}

/// The packet count of the one rule in `table` at `priority` whose match is `matches`.
pub fn packets(flows: &[FlowLine], table: u8, priority: u16, matches: &str) -> u64 {
    let found: Vec<_> =
        flows.iter().filter(|f| f.table == table && f.priority == priority && f.matches == matches).collect();
    assert_eq!(found.len(), 1, "expected one rule table={table} priority={priority} {matches:?}, found {found:?}");
    found[0].n_packets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rules_with_and_without_matches() {
        let text = "oxsdn flows\n table=0, n_packets=5, n_bytes=300, priority=100,arp actions=goto_table:20\n table=80, n_packets=3, n_bytes=294, priority=0 actions=drop\n";
        let flows = parse(text).unwrap();
        assert_eq!(flows.len(), 2);
        assert_eq!(packets(&flows, 0, 100, "arp"), 5);
        assert_eq!(packets(&flows, 80, 0, ""), 3);
        assert_eq!(flows[1].actions, "drop");
    }
}
