//! NetNamespaces' annotations (`kubectl annotate`, and whole from a manifest): each
//! change is one transaction on the project's record.

use std::collections::BTreeMap;

use super::{
    policy::{refuse_set_and_removed, relabeled},
    Cluster,
};
use crate::{
    netnamespaces::{validate_annotations, validate_project_name},
    Error, NetNamespace, Result,
};

/// What `Cluster::annotate_netnamespace` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotated {
    /// The record as it now is.
    pub netnamespace: NetNamespace,
    pub changed: bool,
    /// Annotations asked to be removed that were not there (kubectl warns of them).
    pub not_found: Vec<String>,
}

impl Cluster {
    /// `kubectl annotate netnamespace`: sets `set` and removes `remove` from project
    /// `name`'s annotations. A key both set and removed is refused, and so is a new
    /// value for an existing key unless `overwrite` (`Error::LabelExists`), as kubectl
    /// refuses them; the result must pass Kubernetes' checks (`validate_annotations`).
    pub fn annotate_netnamespace(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
        overwrite: bool,
    ) -> Result<Annotated> {
        validate_project_name(name)?;
        validate_annotations(set)?;
        refuse_set_and_removed(set, remove, "annotation")?;
        self.transact("netnamespaces", |a| {
            let mut ns = a.record::<NetNamespace>(name)?.ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
            let (annotations, not_found) = relabeled(&ns.annotations, set, remove, overwrite)?;
            let changed = annotations != ns.annotations;
            if changed {
                ns.annotations = annotations;
                validate_annotations(&ns.annotations)?;
                a.put_record(&ns)?;
            }
            Ok(Annotated { netnamespace: ns, changed, not_found })
        })
    }

    /// Replaces project `name`'s annotations with `annotations` (a manifest's
    /// `metadata.annotations`, as `kubectl apply` leaves them); whether they changed.
    pub fn set_netnamespace_annotations(&self, name: &str, annotations: &BTreeMap<String, String>) -> Result<bool> {
        validate_project_name(name)?;
        validate_annotations(annotations)?;
        self.transact("netnamespaces", |a| {
            let mut ns = a.record::<NetNamespace>(name)?.ok_or_else(|| Error::UnknownProject(name.to_owned()))?;
            if ns.annotations == *annotations {
                return Ok(false);
            }
            ns.annotations = annotations.clone();
            a.put_record(&ns)?;
            Ok(true)
        })
    }
}
