//! Least privilege on etcd: the etcd users and roles oxsdn runs with, what each may read
//! and write, and `EtcdStore::setup_auth`, which creates them and enables etcd's auth.
//!
//! With etcd's `--client-cert-auth`, the common name (CN) of a client's certificate is
//! its etcd user:
//! - `root`, etcd's superuser (built-in role `root`): sets up users and roles, nothing
//!   else. etcd refuses to enable auth without it.
//! - `oxsdn-operator` (role `oxsdn-operator`): reads and writes every key under `/oxsdn/`;
//!   what `oxsdnctl` needs for init, projects, pod-network commands, services and nodes.
//! - `oxsdn-node-NAME` (role `oxsdn-node-NAME`), one per node, for its agent: reads every
//!   key under `/oxsdn/` (it follows the configuration, projects, nodes and services) and
//!   writes its own HostSubnet and the HostSubnets guard, which registering a node
//!   rewrites (`cluster::keys::HOSTSUBNETS_GUARD`), and the addresses of its own pods
//!   (`/oxsdn/pods/NAME/`, and their guard), and its lease (`/oxsdn/leases/NAME`, the
//!   heartbeat egress IP placement follows). It cannot create a project nor change any
//!   VNID, service, policy, label, the configuration, another node's HostSubnet or
//!   another node's pods.

use etcd_client::{Permission, PermissionType, RoleRevokePermissionOptions, UserAddOptions};

use super::{EtcdStore, StoreError};
use crate::{cluster::keys, hostsubnets::validate_node_name};

/// etcd's superuser, and its built-in role.
pub const ROOT: &str = "root";
/// The operators' etcd user and role.
pub const OPERATOR: &str = "oxsdn-operator";

/// The etcd user (and role) of node `node`'s agent.
pub fn node_user(node: &str) -> String {
    format!("oxsdn-node-{node}")
}

/// One permission of a role: `access` to `key`, or to every key starting with `key`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub access: Access,
    pub key: String,
    pub prefix: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Grant {
    fn new(access: Access, key: &str, prefix: bool) -> Grant {
        Grant { access, key: key.to_owned(), prefix }
    }

    fn permission_type(&self) -> PermissionType {
        match self.access {
            Access::Read => PermissionType::Read,
            Access::Write => PermissionType::Write,
            Access::ReadWrite => PermissionType::Readwrite,
        }
    }

    fn range_end(&self) -> Vec<u8> {
        if self.prefix {
            prefix_end(self.key.as_bytes())
        } else {
            Vec::new()
        }
    }

    /// etcd's form, as a role lists it: permission type, key and range end (empty for
    /// one key).
    fn etcd_form(&self) -> (i32, Vec<u8>, Vec<u8>) {
        (self.permission_type() as i32, self.key.clone().into_bytes(), self.range_end())
    }

    fn permission(&self) -> Permission {
        let permission = Permission::new(self.permission_type(), self.key.as_str());
        if self.prefix {
            permission.with_range_end(self.range_end())
        } else {
            permission
        }
    }
}

/// The end of the key range holding every key that starts with `prefix` (etcd's range
/// ends are exclusive): the prefix with its last byte incremented. oxsdn's prefixes end
/// in '/', which has a successor.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// The operators' permissions: everything of oxsdn's.
pub fn operator_grants() -> Vec<Grant> {
    vec![Grant::new(Access::ReadWrite, keys::PREFIX, true)]
}

/// A node agent's permissions: read everything of oxsdn's, write its HostSubnet and
/// the guard that registering rewrites, and its pods' addresses with their guard.
pub fn node_grants(node: &str) -> Vec<Grant> {
    vec![
        Grant::new(Access::Read, keys::PREFIX, true),
        Grant::new(Access::Write, &format!("{}{node}", keys::HOSTSUBNETS), false),
        Grant::new(Access::Write, keys::HOSTSUBNETS_GUARD, false),
        Grant::new(Access::Write, &format!("{}{node}/", keys::POD_ADDRESSES), true),
        Grant::new(Access::Write, keys::POD_ADDRESSES_GUARD, false),
        Grant::new(Access::Write, &format!("{}{node}", keys::LEASES), false),
    ]
}

/// etcd's answer for a user or role that does not exist.
fn not_found(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().ends_with("not found"))
}

impl EtcdStore {
    /// Creates (or brings back to what they must be) the users and roles above: `root`,
    /// `oxsdn-operator` and, for each of `nodes`, `oxsdn-node-NAME`; then enables auth.
    /// Idempotent: roles and users that exist get exactly the permissions and role
    /// listed (extra ones are revoked). Other users and roles are left alone. Before
    /// auth is enabled any client etcd trusts may run it; after, only `root`. Returns
    /// one line per user, role and the auth switch, saying what changed.
    pub fn setup_auth(&self, nodes: &[String]) -> crate::Result<Vec<String>> {
        for node in nodes {
            validate_node_name(node)?;
        }
        let run = || -> Result<Vec<String>, StoreError> {
            let mut report = vec![self.ensure_user(ROOT, ROOT)?];
            report.push(self.ensure_role(OPERATOR, &operator_grants())?);
            report.push(self.ensure_user(OPERATOR, OPERATOR)?);
            for node in nodes {
                let name = node_user(node);
                report.push(self.ensure_role(&name, &node_grants(node))?);
                report.push(self.ensure_user(&name, &name)?);
            }
            let mut auth = self.client.auth_client();
            self.call("auth enable", auth.auth_enable())?;
            report.push("auth: enabled".into());
            Ok(report)
        };
        run().map_err(|e| match e {
            StoreError::PermissionDenied(m) => StoreError::PermissionDenied(format!(
                "{m}; once auth is enabled, only etcd's root user (a client certificate with CN root) may set it up"
            ))
            .into(),
            other => other.into(),
        })
    }

    /// Runs an auth request; `None` if etcd says the user or role does not exist.
    fn found<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<Option<T>, StoreError> {
        match self.call_or_etcd_error(what, request)? {
            Ok(value) => Ok(Some(value)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.error(what, e)),
        }
    }

    /// Role `name` with exactly `grants`; says what it did.
    fn ensure_role(&self, name: &str, grants: &[Grant]) -> Result<String, StoreError> {
        let mut auth = self.client.auth_client();
        let (created, current) = match self.found("role get", auth.role_get(name))? {
            Some(role) => {
                let permissions = role.permissions();
                (false, permissions.iter().map(|p| (p.get_type(), p.key().to_vec(), p.range_end().to_vec())).collect())
            }
            None => {
                self.call("role add", auth.role_add(name))?;
                (true, Vec::new())
            }
        };
        let wanted: Vec<_> = grants.iter().map(Grant::etcd_form).collect();
        let mut changes = Vec::new();
        for (kind, key, range_end) in current.iter().filter(|p| !wanted.contains(p)) {
            let options =
                (!range_end.is_empty()).then(|| RoleRevokePermissionOptions::new().with_range_end(range_end.clone()));
            self.call("role revoke-permission", auth.role_revoke_permission(name, key.clone(), options))?;
            changes.push(format!("revoked {}", describe(*kind, key, range_end)));
        }
        for grant in grants.iter().filter(|g| !current.contains(&g.etcd_form())) {
            self.call("role grant-permission", auth.role_grant_permission(name, grant.permission()))?;
            let (kind, key, range_end) = grant.etcd_form();
            changes.push(format!("granted {}", describe(kind, &key, &range_end)));
        }
        Ok(summary("role", name, created, &changes))
    }

    /// User `name` (authenticated by certificate only: it has no password) with exactly
    /// role `role`; says what it did.
    fn ensure_user(&self, name: &str, role: &str) -> Result<String, StoreError> {
        let mut auth = self.client.auth_client();
        let (created, roles) = match self.found("user get", auth.user_get(name))? {
            Some(user) => (false, user.roles().to_vec()),
            None => {
                let no_password = UserAddOptions::new().with_no_pwd();
                self.call("user add", auth.user_add(name, "", Some(no_password)))?;
                (true, Vec::new())
            }
        };
        let mut changes = Vec::new();
        for extra in roles.iter().filter(|r| *r != role) {
            self.call("user revoke-role", auth.user_revoke_role(name, extra.as_str()))?;
            changes.push(format!("revoked role {extra}"));
        }
        if !roles.iter().any(|r| r == role) {
            self.call("user grant-role", auth.user_grant_role(name, role))?;
            changes.push(format!("granted role {role}"));
        }
        Ok(summary("user", name, created, &changes))
    }
}

/// "read /oxsdn/*", "write /oxsdn/hostsubnets/node1".
fn describe(kind: i32, key: &[u8], range_end: &[u8]) -> String {
    let access = match PermissionType::try_from(kind) {
        Ok(PermissionType::Read) => "read",
        Ok(PermissionType::Write) => "write",
        Ok(PermissionType::Readwrite) => "readwrite",
        Err(_) => "unknown access to",
    };
    let key = String::from_utf8_lossy(key);
    match range_end {
        [] => format!("{access} {key}"),
        end if end == prefix_end(key.as_bytes()).as_slice() => format!("{access} {key}*"),
        end => format!("{access} [{key}, {})", String::from_utf8_lossy(end)),
    }
}

fn summary(kind: &str, name: &str, created: bool, changes: &[String]) -> String {
    match (created, changes.is_empty()) {
        (_, true) => format!("{kind} {name}: unchanged"),
        (true, false) => format!("{kind} {name}: created, {}", changes.join(", ")),
        (false, false) => format!("{kind} {name}: {}", changes.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, sync::Arc};

    use super::*;
    use crate::{
        store::{
            testing::{put, Backing, Kind},
            Store,
        },
        Cluster, ClusterConfig, Error, Protocol, ServicePort,
    };

    #[test]
    fn grants_in_etcds_form() {
        assert_eq!(
            operator_grants().iter().map(Grant::etcd_form).collect::<Vec<_>>(),
            [(PermissionType::Readwrite as i32, b"/oxsdn/".to_vec(), b"/oxsdn0".to_vec())]
        );
        let node = node_grants("node1");
        let described: Vec<String> = node
            .iter()
            .map(|g| {
                let (kind, key, end) = g.etcd_form();
                describe(kind, &key, &end)
            })
            .collect();
        assert_eq!(
            described,
            [
                "read /oxsdn/*",
                "write /oxsdn/hostsubnets/node1",
                "write /oxsdn/guards/hostsubnets",
                "write /oxsdn/pods/node1/*",
                "write /oxsdn/guards/pods",
                "write /oxsdn/leases/node1"
            ]
        );
    }

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn setup_gives_each_user_exactly_its_role_and_runs_again_as_root_only() {
        let backing = Backing::new(Kind::Etcd);
        let root = backing.etcd_store(ROOT);
        assert_eq!(
            root.setup_auth(&nodes(&["node1"])).unwrap(),
            [
                "user root: created, granted role root",
                "role oxsdn-operator: created, granted readwrite /oxsdn/*",
                "user oxsdn-operator: created, granted role oxsdn-operator",
                "role oxsdn-node-node1: created, granted read /oxsdn/*, granted write /oxsdn/hostsubnets/node1, \
                 granted write /oxsdn/guards/hostsubnets, granted write /oxsdn/pods/node1/*, \
                 granted write /oxsdn/guards/pods, granted write /oxsdn/leases/node1",
                "user oxsdn-node-node1: created, granted role oxsdn-node-node1",
                "auth: enabled",
            ]
        );
        // Widened by hand: the node's role may write everything, its user is an operator.
        let mut auth = root.client.auth_client();
        root.call(
            "grant",
            auth.role_grant_permission("oxsdn-node-node1", Permission::read_write("/oxsdn/").with_prefix()),
        )
        .unwrap();
        root.call("grant", auth.user_grant_role("oxsdn-node-node1", OPERATOR)).unwrap();
        // Run again (with a new node): back to exactly what they must be.
        assert_eq!(
            root.setup_auth(&nodes(&["node1", "node2"])).unwrap(),
            [
                "user root: unchanged",
                "role oxsdn-operator: unchanged",
                "user oxsdn-operator: unchanged",
                "role oxsdn-node-node1: revoked readwrite /oxsdn/*, granted read /oxsdn/*",
                "user oxsdn-node-node1: revoked role oxsdn-operator",
                "role oxsdn-node-node2: created, granted read /oxsdn/*, granted write /oxsdn/hostsubnets/node2, \
                 granted write /oxsdn/guards/hostsubnets, granted write /oxsdn/pods/node2/*, \
                 granted write /oxsdn/guards/pods, granted write /oxsdn/leases/node2",
                "user oxsdn-node-node2: created, granted role oxsdn-node-node2",
                "auth: enabled",
            ]
        );
        // Once auth is on, no other user may change users or roles.
        for user in [OPERATOR, "oxsdn-node-node1"] {
            match backing.etcd_store(user).setup_auth(&nodes(&["node3"])) {
                Err(Error::Store(StoreError::PermissionDenied(message))) => {
                    assert!(message.contains("only etcd's root user"), "{message}")
                }
                other => panic!("{user}: expected a refusal, got {other:?}"),
            }
        }
        assert!(matches!(root.setup_auth(&nodes(&["bad/name"])), Err(Error::InvalidNodeName(_))));
    }

    /// Whether `result` is etcd's refusal of a write of `key`.
    fn denied<T: std::fmt::Debug>(result: crate::Result<T>, key: &str) -> bool {
        match result {
            Err(Error::Store(StoreError::PermissionDenied(message))) => {
                assert!(message.contains(key), "{message}");
                true
            }
            other => panic!("expected etcd to refuse writing {key}, got {other:?}"),
        }
    }

    #[test]
    fn a_node_writes_only_its_own_hostsubnet_and_an_operator_writes_everything() {
        let backing = Backing::new(Kind::Etcd);
        backing.etcd_store(ROOT).setup_auth(&nodes(&["node1", "node2"])).unwrap();
        let operator = Cluster::new(Arc::new(backing.etcd_store(OPERATOR)));
        operator.init_config(&ClusterConfig::default()).unwrap();
        let red = operator.ensure_netnamespace("red").unwrap();
        let node1_store: Arc<dyn Store> = Arc::new(backing.etcd_store(&node_user("node1")));
        let node1 = Cluster::new(node1_store.clone());
        let (node1_ip, node2_ip) = (Ipv4Addr::new(192, 0, 2, 11), Ipv4Addr::new(192, 0, 2, 12));

        // What an agent does: read and follow everything, register itself, find the
        // projects of its pods.
        assert_eq!(node1.config().unwrap(), ClusterConfig::default());
        let (_, revision) = node1.list_netnamespaces().unwrap();
        let events = node1.watch_netnamespaces(revision).unwrap();
        node1.list_services().unwrap();
        node1.register_node("node1", node1_ip).unwrap();
        assert_eq!(node1.ensure_netnamespace("red").unwrap(), red);
        let before = operator.store().list(keys::PREFIX).unwrap();

        // Nothing else.
        assert!(denied(node1.register_node("node2", node2_ip), "/oxsdn/hostsubnets/node2"));
        match node1.ensure_netnamespace("blue") {
            Err(e @ Error::ProjectCreationDenied { .. }) => assert!(
                e.to_string().starts_with(
                    "project \"blue\" does not exist and this node may not create it: an operator creates it with \
                     `oxsdnctl create project blue` (store permission denied: "
                ),
                "{e}"
            ),
            other => panic!("expected ProjectCreationDenied, got {other:?}"),
        }
        assert!(denied(node1.make_projects_global(&["red".into()]), "/oxsdn/netnamespaces/red"));
        assert!(denied(node1.delete_netnamespace("red"), "/oxsdn/netnamespaces/red"));
        let ports = [ServicePort::new(Protocol::Tcp, 80, 8080)];
        assert!(denied(node1.create_service("red", "web", &ports, None), "/oxsdn/services/red/web"));
        for key in [
            keys::CONFIG,
            "/oxsdn/netnamespaces/red",
            keys::PROJECT_ID_COUNTER,
            keys::NETNAMESPACES_GUARD,
            "/elsewhere",
        ] {
            assert!(denied(node1_store.txn(&[], &[put(key, "0")]).map_err(Error::from), key));
        }
        assert_eq!(operator.store().list(keys::PREFIX).unwrap(), before, "a refused write changed the store");
        assert!(events.try_recv().is_err(), "a refused write made an event");

        // The operator's credentials can do all of it.
        operator.register_node("node2", node2_ip).unwrap();
        operator.ensure_netnamespace("blue").unwrap();
        operator.make_projects_global(&["red".into()]).unwrap();
        operator.create_service("red", "web", &ports, None).unwrap();
    }
}
