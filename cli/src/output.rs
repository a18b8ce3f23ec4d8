//! Printing records the way `oc get` does.

use std::io::Write;

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
};

use anyhow::Result;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use oxsdn_controller::{
    egress::EgressNetworkPolicyRecord,
    policy::{NetworkPolicyRecord, PodAddress, PodMeta},
    ClusterConfig, HostSubnet, NetNamespace, Service,
};
use serde::Serialize;
use serde_json::json;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// JSON: oxsdn's records as an array; Kubernetes' objects as the API serves them
    /// (a `List` of them).
    Json,
    /// YAML, as JSON.
    Yaml,
}

/// Writes `value` as JSON or YAML.
pub fn write_value(out: &mut dyn Write, value: &impl Serialize, format: Format) -> Result<()> {
    if format == Format::Yaml {
        serde_yaml_ng::to_writer(&mut *out, value)?;
    } else {
        serde_json::to_writer_pretty(&mut *out, value)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes `value` as one record of a stream: a line of JSON, or a YAML document.
pub fn write_record(out: &mut dyn Write, value: &impl Serialize, format: Format) -> Result<()> {
    if format == Format::Yaml {
        writeln!(out, "---")?;
        serde_yaml_ng::to_writer(&mut *out, value)?;
    } else {
        writeln!(out, "{}", serde_json::to_string(value)?)?;
    }
    Ok(())
}

/// Kubernetes objects as kubectl prints them: one object, or a `List` of them.
fn write_objects<T: Serialize>(out: &mut dyn Write, mut objects: Vec<T>, single: bool, format: Format) -> Result<()> {
    match objects.pop() {
        Some(object) if single && objects.is_empty() => write_value(out, &object, format),
        last => {
            objects.extend(last);
            let list =
                json!({"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}});
            write_value(out, &list, format)
        }
    }
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
        Format::Json | Format::Yaml => write_value(out, &records, format)?,
        Format::Table if records.is_empty() => eprintln!("No resources found."),
        Format::Table => table(out, headers, &records.iter().map(row).collect::<Vec<_>>())?,
    }
    Ok(())
}

pub fn print_netnamespaces(out: &mut dyn Write, records: &[NetNamespace], format: Format) -> Result<()> {
    print(out, records, format, &["NAME", "NETID"], |ns| vec![ns.name.clone(), ns.netid.to_string()])
}

/// A NetNamespace with its egress IPs, as `oc get netnamespaces` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetNamespaceView {
    #[serde(flatten)]
    pub record: NetNamespace,
    #[serde(rename = "egressIPs", skip_serializing_if = "Vec::is_empty")]
    pub egress_ips: Vec<std::net::Ipv4Addr>,
}

/// A HostSubnet with its egress IPs and CIDRs, as `oc get hostsubnets` shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSubnetView {
    #[serde(flatten)]
    pub record: HostSubnet,
    #[serde(rename = "egressIPs", skip_serializing_if = "Vec::is_empty")]
    pub egress_ips: Vec<std::net::Ipv4Addr>,
    #[serde(rename = "egressCIDRs", skip_serializing_if = "Vec::is_empty")]
    pub egress_cidrs: Vec<ipnetwork::Ipv4Network>,
}

/// A list cell as `oc` prints one: `[a b]`, `[]` when empty.
fn list_cell<T: ToString>(items: &[T]) -> String {
    format!("[{}]", items.iter().map(T::to_string).collect::<Vec<_>>().join(" "))
}

/// `oc get netnamespaces`: NAME, NETID, EGRESS IPS.
pub fn print_netnamespace_views(out: &mut dyn Write, records: &[NetNamespaceView], format: Format) -> Result<()> {
    print(out, records, format, &["NAME", "NETID", "EGRESS IPS"], |v| {
        vec![v.record.name.clone(), v.record.netid.to_string(), list_cell(&v.egress_ips)]
    })
}

/// `oc get hostsubnets`: NAME, HOST, HOST IP, SUBNET, EGRESS CIDRS, EGRESS IPS.
pub fn print_hostsubnet_views(out: &mut dyn Write, records: &[HostSubnetView], format: Format) -> Result<()> {
    print(out, records, format, &["NAME", "HOST", "HOST IP", "SUBNET", "EGRESS CIDRS", "EGRESS IPS"], |v| {
        let hs = &v.record;
        vec![
            hs.host.clone(),
            hs.host.clone(),
            hs.host_ip.to_string(),
            hs.subnet.to_string(),
            list_cell(&v.egress_cidrs),
            list_cell(&v.egress_ips),
        ]
    })
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

/// `oc get clusternetwork`: the table, or OpenShift's ClusterNetwork object.
pub fn print_cluster_network(out: &mut dyn Write, config: &ClusterConfig, format: Format) -> Result<()> {
    let plugin = config.network_plugin.openshift_name();
    if format == Format::Table {
        let row =
            vec!["default".to_owned(), config.cluster_network.to_string(), config.service_network.to_string(), plugin];
        return table(out, &["NAME", "CLUSTER NETWORK", "SERVICE NETWORK", "PLUGIN NAME"], &[row]);
    }
    let object = json!({
        "apiVersion": "network.openshift.io/v1",
        "kind": "ClusterNetwork",
        "metadata": {"name": "default"},
        "clusterNetworks": [{"CIDR": config.cluster_network.to_string(), "hostSubnetLength": config.host_subnet_length}],
        "network": config.cluster_network.to_string(),
        "hostsubnetlength": config.host_subnet_length,
        "serviceNetwork": config.service_network.to_string(),
        "pluginName": plugin,
        "vxlanPort": config.vxlan_port,
        "mtu": config.mtu,
    });
    write_value(out, &object, format)
}

/// A label selector as kubectl shows it: requirements by key, `k=v`, `k in (a,b)`,
/// `k notin (a)`, `k`, `!k`; `<none>` for the empty one, which selects everything.
pub fn format_selector(selector: Option<&LabelSelector>) -> String {
    let Some(selector) = selector else { return "<none>".into() };
    let mut requirements: Vec<(String, String)> =
        selector.match_labels.iter().flatten().map(|(k, v)| (k.clone(), format!("{k}={v}"))).collect();
    for e in selector.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let text = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({})", e.key, values.join(",")),
        };
        requirements.push((e.key.clone(), text));
    }
    requirements.sort();
    match requirements.is_empty() {
        true => "<none>".into(),
        false => requirements.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(","),
    }
}

/// `kubectl get networkpolicies`: `NAMESPACE` first if `with_namespace`; JSON and YAML
/// as networking.k8s.io/v1 objects (`single`: the one object, not a List).
pub fn print_network_policies(
    out: &mut dyn Write,
    records: &[NetworkPolicyRecord],
    format: Format,
    with_namespace: bool,
    single: bool,
) -> Result<()> {
    if format != Format::Table {
        return write_objects(out, records.iter().map(NetworkPolicyRecord::to_object).collect(), single, format);
    }
    let headers = ["NAMESPACE", "NAME", "POD-SELECTOR"];
    let skip = usize::from(!with_namespace);
    print(out, records, format, &headers[skip..], |p| {
        let row = [p.namespace.clone(), p.name.clone(), format_selector(p.spec.pod_selector.as_ref())];
        row[skip..].to_vec()
    })
}

/// `oc get egressnetworkpolicies`, with the project and the rules in order
/// (`Allow:10.0.0.0/8,Deny:0.0.0.0/0`, the first few of a long list); JSON and YAML as
/// network.openshift.io/v1 objects.
pub fn print_egress_policies(out: &mut dyn Write, records: &[EgressNetworkPolicyRecord], format: Format) -> Result<()> {
    if format != Format::Table {
        return write_objects(out, records.iter().map(EgressNetworkPolicyRecord::to_object).collect(), false, format);
    }
    print(out, records, format, &["NAMESPACE", "NAME", "RULES"], |p| {
        const SHOWN: usize = 4;
        let mut rules: Vec<String> = p
            .spec
            .egress
            .iter()
            .take(SHOWN)
            .map(|r| {
                let to = r.to.cidr_selector.as_deref().or(r.to.dns_name.as_deref()).unwrap_or_default();
                format!("{:?}:{to}", r.kind)
            })
            .collect();
        if p.spec.egress.len() > SHOWN {
            rules.push(format!("... ({} rules)", p.spec.egress.len()));
        }
        vec![p.namespace.clone(), p.name.clone(), if rules.is_empty() { "<none>".into() } else { rules.join(",") }]
    })
}

fn labels_cell(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `kubectl get namespaces --show-labels`, with the labels selectors see (the implied
/// `kubernetes.io/metadata.name` included); JSON and YAML as v1 Namespaces.
pub fn print_namespaces(out: &mut dyn Write, records: &[NetNamespace], format: Format) -> Result<()> {
    if format != Format::Table {
        return write_objects(out, records.iter().map(NetNamespace::to_namespace).collect(), false, format);
    }
    print(out, records, format, &["NAME", "NETID", "LABELS"], |ns| {
        vec![ns.name.clone(), ns.netid.to_string(), labels_cell(&ns.effective_labels())]
    })
}

/// Pods' labels and named ports (from manifests or `label pod`), with the addresses of
/// those the CNI plugin added (`<none>` before the ADD).
pub fn print_pods(out: &mut dyn Write, pods: &[PodMeta], addresses: &[PodAddress], format: Format) -> Result<()> {
    let mut ips: HashMap<(&str, &str), Vec<Ipv4Addr>> = HashMap::new();
    for a in addresses {
        ips.entry((&a.namespace, &a.name)).or_default().push(a.ip);
    }
    print(out, pods, format, &["NAMESPACE", "NAME", "IP", "LABELS", "NAMED PORTS"], |p| {
        let ip = match ips.get(&(p.namespace.as_str(), p.name.as_str())) {
            Some(ips) => ips.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(","),
            None => "<none>".into(),
        };
        let ports: Vec<String> = p.ports.iter().map(|n| format!("{}:{}/{}", n.name, n.port, n.protocol)).collect();
        let ports = if ports.is_empty() { "<none>".into() } else { ports.join(",") };
        vec![p.namespace.clone(), p.name.clone(), ip, labels_cell(&p.labels), ports]
    })
}
