//! `apps/v1` kinds: Deployment, ReplicaSet, DaemonSet, with Kubernetes'
//! field names and rules.
//!
//! `apiVersion` and `kind` default to empty here: the hub fills them in from
//! the request path before it decodes a body.

use serde::{Deserialize, Serialize};

use crate::core::{Condition, PodTemplateSpec};
use crate::meta::ObjectMeta;
use crate::selector::LabelSelector;
use crate::validation::{FieldError, validate_meta, validate_pod_spec};

/// An integer or a percentage (`maxSurge: 1`, `maxUnavailable: "25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl IntOrString {
    /// The absolute value against `total`: a percentage is rounded up when
    /// `round_up` (maxSurge) and down otherwise (maxUnavailable), as
    /// Kubernetes does.
    pub fn scaled(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self {
            IntOrString::Int(n) if *n >= 0 => Ok(*n),
            IntOrString::Int(n) => Err(format!("must be >= 0 (got {n})")),
            IntOrString::String(s) => {
                let pct: i64 = s
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| *p >= 0)
                    .ok_or_else(|| {
                        format!(
                            "\"{s}\" must be a non-negative integer or a percentage like \"25%\""
                        )
                    })?;
                let num = pct * total as i64;
                let v = if round_up {
                    (num + 99) / 100
                } else {
                    num / 100
                };
                Ok(v.min(i32::MAX as i64) as i32)
            }
        }
    }
}

/// A Deployment: a replicated pod with rolling updates and rollback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Old ReplicaSets kept for rollback; defaults to 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    /// Defaults to 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

/// `maxSurge` and `maxUnavailable`, both defaulting to 25%.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default)]
    pub unavailable_replicas: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DeploymentCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collision_count: Option<i32>,
}

/// A Deployment's condition (`Available`, `Progressing`): a pod condition
/// plus `lastUpdateTime`, when the controller last saw progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// Keeps `replicas` pods matching its selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSet {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReplicaSetSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplicaSetStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub fully_labeled_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default)]
    pub available_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One pod on every node that matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DaemonSet {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DaemonSetSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DaemonSetStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetSpec {
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<DaemonSetUpdateStrategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetUpdateStrategy {
    /// `RollingUpdate` (default) or `OnDelete`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DaemonSetStatus {
    #[serde(default)]
    pub current_number_scheduled: i32,
    #[serde(default)]
    pub number_misscheduled: i32,
    #[serde(default)]
    pub desired_number_scheduled: i32,
    #[serde(default)]
    pub number_ready: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub updated_number_scheduled: i32,
    #[serde(default)]
    pub number_available: i32,
    #[serde(default)]
    pub number_unavailable: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Checks `selector` + `template` as every workload has them: the selector
/// is non-empty and valid, and matches the template's labels (otherwise the
/// controller would make pods it cannot see, forever).
pub(crate) fn validate_selector_and_template(
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    at: &str,
    errs: &mut Vec<FieldError>,
) {
    if selector.is_empty() {
        errs.push(FieldError::required(format!("{at}.selector")));
    } else {
        match selector.to_selector() {
            Err(e) => errs.push(FieldError::invalid(format!("{at}.selector"), e)),
            Ok(sel) if !sel.matches(&template.metadata.labels) => {
                errs.push(FieldError::invalid(
                    format!("{at}.template.metadata.labels"),
                    format!("`selector` does not match template `labels` (selector: {sel})"),
                ));
            }
            Ok(_) => {}
        }
    }
    validate_pod_spec(&template.spec, &format!("{at}.template.spec"), errs);
}

fn non_negative(v: Option<i32>, field: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = v
        && n < 0
    {
        errs.push(FieldError::invalid(
            field,
            format!("must be greater than or equal to 0 (got {n})"),
        ));
    }
}

fn validate_rolling(ru: &RollingUpdate, at: &str, errs: &mut Vec<FieldError>) {
    for (name, v) in [
        ("maxSurge", &ru.max_surge),
        ("maxUnavailable", &ru.max_unavailable),
    ] {
        if let Some(v) = v {
            if let Err(e) = v.scaled(100, true) {
                errs.push(FieldError::invalid(format!("{at}.{name}"), e));
            } else if let IntOrString::String(s) = v
                && v.scaled(100, true).unwrap_or(0) > 100
            {
                errs.push(FieldError::invalid(
                    format!("{at}.{name}"),
                    format!("\"{s}\" must not be greater than 100%"),
                ));
            }
        }
    }
    let zero = |v: &Option<IntOrString>| v.as_ref().is_some_and(|v| v.scaled(100, true) == Ok(0));
    if zero(&ru.max_surge) && zero(&ru.max_unavailable) {
        errs.push(FieldError::invalid(
            format!("{at}.maxUnavailable"),
            "may not be 0 when maxSurge is 0",
        ));
    }
}

impl Deployment {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        let s = &self.spec;
        non_negative(s.replicas, "spec.replicas", &mut errs);
        non_negative(s.min_ready_seconds, "spec.minReadySeconds", &mut errs);
        non_negative(
            s.revision_history_limit,
            "spec.revisionHistoryLimit",
            &mut errs,
        );
        if let Some(p) = s.progress_deadline_seconds
            && p <= s.min_ready_seconds.unwrap_or(0)
        {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                "must be greater than minReadySeconds",
            ));
        }
        validate_selector_and_template(&s.selector, &s.template, "spec", &mut errs);
        if let Some(st) = &s.strategy {
            match st.type_.as_deref() {
                None | Some("RollingUpdate") => {
                    if let Some(ru) = &st.rolling_update {
                        validate_rolling(ru, "spec.strategy.rollingUpdate", &mut errs);
                    }
                }
                Some("Recreate") if st.rolling_update.is_some() => {
                    errs.push(FieldError::new(
                        "spec.strategy.rollingUpdate",
                        "FieldValueForbidden",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
                Some("Recreate") => {}
                Some(other) => errs.push(FieldError::new(
                    "spec.strategy.type",
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Recreate\", \"RollingUpdate\""
                    ),
                )),
            }
        }
        errs
    }

    /// `spec.replicas`, defaulted.
    pub fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
}

impl ReplicaSet {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        non_negative(self.spec.replicas, "spec.replicas", &mut errs);
        non_negative(
            self.spec.min_ready_seconds,
            "spec.minReadySeconds",
            &mut errs,
        );
        validate_selector_and_template(&self.spec.selector, &self.spec.template, "spec", &mut errs);
        errs
    }

    pub fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }
}

impl DaemonSet {
    pub fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_meta(&self.metadata, true, &mut errs);
        non_negative(
            self.spec.min_ready_seconds,
            "spec.minReadySeconds",
            &mut errs,
        );
        validate_selector_and_template(&self.spec.selector, &self.spec.template, "spec", &mut errs);
        if let Some(us) = &self.spec.update_strategy {
            match us.type_.as_deref() {
                None | Some("RollingUpdate") => {
                    if let Some(ru) = &us.rolling_update {
                        validate_rolling(ru, "spec.updateStrategy.rollingUpdate", &mut errs);
                    }
                }
                Some("OnDelete") => {}
                Some(other) => errs.push(FieldError::new(
                    "spec.updateStrategy.type",
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"OnDelete\", \"RollingUpdate\""
                    ),
                )),
            }
        }
        let restart = self.spec.template.spec.restart_policy.as_deref();
        if !matches!(restart, None | Some("Always")) {
            errs.push(FieldError::new(
                "spec.template.spec.restartPolicy",
                "FieldValueNotSupported",
                "Unsupported value: only \"Always\" is allowed for a DaemonSet",
            ));
        }
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::decode_strict;
    use serde_json::json;

    fn deployment(spec: serde_json::Value) -> Deployment {
        decode_strict(json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}))
            .unwrap()
    }

    fn template() -> serde_json::Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "web", "image": "web:v1"}]}})
    }

    #[test]
    fn a_good_deployment_passes() {
        let d = deployment(json!({
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
        }));
        assert_eq!(d.validate(), vec![]);
    }

    #[test]
    fn deployment_rules_name_each_field() {
        let mut t = template();
        t["spec"]["containers"][0]["image"] = json!("");
        let d = deployment(json!({
            "replicas": -1,
            "selector": {"matchLabels": {"app": "other"}},
            "template": t,
            "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}},
        }));
        let fields: Vec<String> = d.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            [
                "spec.replicas",
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image",
                "spec.strategy.rollingUpdate.maxUnavailable",
            ]
        );
    }

    #[test]
    fn percentages_round_like_kubernetes() {
        let p = IntOrString::String("25%".into());
        assert_eq!(p.scaled(10, true), Ok(3));
        assert_eq!(p.scaled(10, false), Ok(2));
        assert_eq!(IntOrString::Int(2).scaled(10, true), Ok(2));
        assert!(IntOrString::String("x%".into()).scaled(10, true).is_err());
    }

    #[test]
    fn daemonsets_must_restart_always() {
        let mut t = template();
        t["spec"]["restartPolicy"] = json!("Never");
        let ds: DaemonSet = decode_strict(json!({"metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": t}}))
        .unwrap();
        let fields: Vec<String> = ds.validate().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.template.spec.restartPolicy"]);
    }
}
