//! EgressNetworkPolicies: one per project, keyed by the project. Each change is one
//! transaction that reads the project (it must exist and not be global).

use std::sync::mpsc::Receiver;

use super::{keys, policy::ApplyOutcome, Attempt, Cluster, Record};
use crate::{
    egress::EgressNetworkPolicyRecord, netnamespaces::validate_project_name, policy::validate_policy_name, Error,
    NetNamespace, Result,
};

impl Record for EgressNetworkPolicyRecord {
    const PREFIX: &'static str = keys::EGRESS_POLICIES;
    const GUARD: &'static str = keys::EGRESS_POLICIES_GUARD;
    const KIND: &'static str = "egressnetworkpolicy";
    /// The project: it has at most one.
    fn key_name(&self) -> String {
        self.namespace.clone()
    }
    fn validate(&self) -> Result<()> {
        self.check()
    }
}

/// A change to an EgressNetworkPolicy, seen through `Cluster::watch_egress_policies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EgressPolicyEvent {
    Upsert(EgressNetworkPolicyRecord),
    /// The project whose policy was deleted.
    Deleted(String),
}

impl Attempt<'_> {
    /// Writes `policy` (checked) if it changes anything; `project`: its project, or an
    /// error if there is none.
    pub(super) fn put_egress_policy(
        &mut self,
        policy: &EgressNetworkPolicyRecord,
        project: Option<&NetNamespace>,
    ) -> Result<ApplyOutcome> {
        let project = project.ok_or_else(|| Error::UnknownProject(policy.namespace.clone()))?;
        policy.check_project(project)?;
        match self.record::<EgressNetworkPolicyRecord>(&policy.namespace)? {
            Some(old) if old.name != policy.name => Err(Error::Invalid(format!(
                "project {:?} already has EgressNetworkPolicy {:?}: a project has at most one (delete it first)",
                policy.namespace, old.name
            ))),
            Some(old) if old == *policy => Ok(ApplyOutcome::Unchanged),
            old => {
                self.put_record(policy)?;
                Ok(if old.is_some() { ApplyOutcome::Configured } else { ApplyOutcome::Created })
            }
        }
    }

    /// Deletes EgressNetworkPolicy `name` of project `namespace`; false if it has none
    /// of that name.
    pub(super) fn delete_egress_policy(&mut self, namespace: &str, name: &str) -> Result<bool> {
        match self.record::<EgressNetworkPolicyRecord>(namespace)? {
            Some(old) if old.name == name => self.delete_record::<EgressNetworkPolicyRecord>(namespace),
            _ => Ok(false),
        }
    }
}

impl Cluster {
    /// Creates or replaces the EgressNetworkPolicy of its project, which must exist and
    /// not be global; a project has at most one (another name is refused).
    pub fn apply_egress_policy(&self, policy: &EgressNetworkPolicyRecord) -> Result<ApplyOutcome> {
        policy.check()?;
        self.transact("egressnetworkpolicies", |a| {
            let project = a.record::<NetNamespace>(&policy.namespace)?;
            a.put_egress_policy(policy, project.as_ref())
        })
    }

    /// Deletes EgressNetworkPolicy `name` of project `namespace`.
    pub fn delete_egress_policy(&self, namespace: &str, name: &str) -> Result<()> {
        validate_project_name(namespace)?;
        validate_policy_name(name)?;
        self.transact("egressnetworkpolicies", |a| match a.delete_egress_policy(namespace, name)? {
            true => Ok(()),
            false => Err(Error::UnknownEgressPolicy { namespace: namespace.to_owned(), name: name.to_owned() }),
        })
    }

    /// The EgressNetworkPolicy of project `namespace`, if it has one.
    pub fn get_egress_policy(&self, namespace: &str) -> Result<Option<EgressNetworkPolicyRecord>> {
        validate_project_name(namespace)?;
        self.get_record(namespace)
    }

    /// Every EgressNetworkPolicy (of project `namespace` if given), and the revision they
    /// were read at.
    pub fn list_egress_policies(&self, namespace: Option<&str>) -> Result<(Vec<EgressNetworkPolicyRecord>, u64)> {
        let (all, revision) = self.list_records::<EgressNetworkPolicyRecord>("")?;
        Ok((all.into_iter().filter(|p| namespace.is_none_or(|ns| p.namespace == ns)).collect(), revision))
    }

    pub fn watch_egress_policies(&self, after_revision: u64) -> Result<Receiver<EgressPolicyEvent>> {
        self.watch_records(after_revision, EgressPolicyEvent::Upsert, |key_name| {
            Some(EgressPolicyEvent::Deleted(key_name.to_owned()))
        })
    }
}

#[cfg(test)]
mod tests;
