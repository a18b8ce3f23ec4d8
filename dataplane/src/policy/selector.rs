//! Kubernetes label selectors (`matchLabels` and `matchExpressions` with In, NotIn,
//! Exists, DoesNotExist), as the API server and kube-proxy evaluate them. An absent
//! selector and an empty one select everything; an operator the selector does not know
//! selects nothing (the controller refuses such manifests; a record that has one is
//! treated as matching nothing, never as matching everything).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector` (`None`: everything).
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let by_labels =
        selector.match_labels.iter().flatten().all(|(key, value)| labels.get(key).is_some_and(|v| v == value));
    by_labels
        && selector.match_expressions.iter().flatten().all(|req| {
            let values = req.values.as_deref().unwrap_or_default();
            let value = labels.get(&req.key);
            match req.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions_all_hold() {
        let pod = labels(&[("app", "web"), ("tier", "front")]);
        assert!(matches(None, &pod));
        assert!(matches(Some(&LabelSelector::default()), &pod));
        let by_label = LabelSelector { match_labels: Some(labels(&[("app", "web")])), ..Default::default() };
        assert!(matches(Some(&by_label), &pod));
        assert!(!matches(Some(&by_label), &labels(&[("app", "db")])));
        for (req, expected) in [
            (expr("tier", "In", &["front", "back"]), true),
            (expr("tier", "In", &["back"]), false),
            (expr("tier", "NotIn", &["back"]), true),
            (expr("missing", "NotIn", &["x"]), true),
            (expr("tier", "NotIn", &["front"]), false),
            (expr("app", "Exists", &[]), true),
            (expr("missing", "Exists", &[]), false),
            (expr("missing", "DoesNotExist", &[]), true),
            (expr("app", "DoesNotExist", &[]), false),
            (expr("app", "Bogus", &[]), false),
        ] {
            let selector = LabelSelector { match_expressions: Some(vec![req.clone()]), ..by_label.clone() };
            assert_eq!(matches(Some(&selector), &pod), expected, "{req:?}");
        }
    }
}
