//! Admission: what happens to an object between the request body and the
//! store. Each kind is decoded strictly (unknown fields and wrong types are
//! refused with their path), defaulted the way Kubernetes defaults it (so
//! what is stored is what controllers act on), and validated.
//!
//! Per-namespace policy (LimitRange defaults and maxima, ResourceQuota) is
//! applied to pods in [`super::policy`], which needs the store.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use spoke_api::apps::{DaemonSet, Deployment, IntOrString, ReplicaSet, RollingUpdate};
use spoke_api::batch::{CronJob, Job};
use spoke_api::core::{Namespace, Node, Pod};
use spoke_api::data::{ConfigMap, Secret};
use spoke_api::event::Event;
use spoke_api::policy::{LimitRange, ResourceQuota};
use spoke_api::resource::ResourceType;
use spoke_api::selector::LabelSelector;
use spoke_api::validation::{self, FieldError, decode_strict};

use super::Error;

/// Decodes, defaults and validates an object of kind `rt`; returns it
/// re-encoded, so that only known fields are stored.
pub fn admit(rt: &ResourceType, value: Value) -> Result<Value, Error> {
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let invalid = |causes: Vec<FieldError>| Error::Invalid {
        kind: rt.kind.to_string(),
        name: name.clone(),
        causes,
    };
    match rt.kind {
        "Pod" => check(value, |p: &mut Pod| validation::validate_pod(p)),
        "Node" => check(value, |n: &mut Node| {
            let mut errs = meta_only(&n.metadata, false);
            validation::validate_taints(&n.spec.taints, "spec", &mut errs);
            errs
        }),
        "Namespace" => check(value, |ns: &mut Namespace| {
            let mut errs = meta_only(&ns.metadata, false);
            if let Err(m) = validation::dns1123_label(&ns.metadata.name) {
                errs.push(FieldError::invalid("metadata.name", m));
            }
            errs
        }),
        "Deployment" => check(value, |d: &mut Deployment| {
            default_deployment(d);
            d.validate()
        }),
        "ReplicaSet" => check(value, |r: &mut ReplicaSet| {
            r.spec.replicas.get_or_insert(1);
            r.validate()
        }),
        "DaemonSet" => check(value, |d: &mut DaemonSet| {
            let us = d.spec.update_strategy.get_or_insert_default();
            let t = us.type_.get_or_insert_with(|| "RollingUpdate".into());
            if t == "RollingUpdate" {
                let ru = us.rolling_update.get_or_insert_default();
                ru.max_unavailable.get_or_insert(IntOrString::Int(1));
                ru.max_surge.get_or_insert(IntOrString::Int(0));
            }
            d.spec.revision_history_limit.get_or_insert(10);
            d.validate()
        }),
        "Job" => check(value, default_and_validate_job),
        "CronJob" => check(value, |c: &mut CronJob| {
            c.spec
                .concurrency_policy
                .get_or_insert_with(|| "Allow".into());
            c.spec.suspend.get_or_insert(false);
            c.spec.successful_jobs_history_limit.get_or_insert(3);
            c.spec.failed_jobs_history_limit.get_or_insert(1);
            c.validate()
        }),
        "ConfigMap" => check(value, |c: &mut ConfigMap| c.validate()),
        "Secret" => check(value, |s: &mut Secret| {
            let errs = s.validate();
            s.fold_string_data();
            s.type_.get_or_insert_with(|| "Opaque".into());
            errs
        }),
        "Event" => check(value, |e: &mut Event| {
            if e.type_.is_empty() {
                e.type_ = "Normal".into();
            }
            e.validate()
        }),
        "ResourceQuota" => check(value, |q: &mut ResourceQuota| q.validate()),
        "LimitRange" => check(value, |l: &mut LimitRange| l.validate()),
        other => return Err(Error::Internal(format!("no admission for kind {other}"))),
    }
    .map_err(|e| match e {
        Checked::Invalid(causes) => invalid(causes),
        Checked::Encode(e) => Error::Internal(e),
    })
}

enum Checked {
    Invalid(Vec<FieldError>),
    Encode(String),
}

fn check<T: DeserializeOwned + Serialize>(
    value: Value,
    rules: impl FnOnce(&mut T) -> Vec<FieldError>,
) -> Result<Value, Checked> {
    let mut obj: T = decode_strict(value).map_err(Checked::Invalid)?;
    let errs = rules(&mut obj);
    if !errs.is_empty() {
        return Err(Checked::Invalid(errs));
    }
    serde_json::to_value(obj).map_err(|e| Checked::Encode(e.to_string()))
}

fn meta_only(meta: &spoke_api::ObjectMeta, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    validation::validate_meta(meta, namespaced, &mut errs);
    errs
}

fn default_deployment(d: &mut Deployment) {
    let s = &mut d.spec;
    s.replicas.get_or_insert(1);
    s.revision_history_limit.get_or_insert(10);
    s.progress_deadline_seconds.get_or_insert(600);
    let st = s.strategy.get_or_insert_default();
    if st.type_.get_or_insert_with(|| "RollingUpdate".into()) == "RollingUpdate" {
        let ru = st.rolling_update.get_or_insert_with(RollingUpdate::default);
        let quarter = || IntOrString::String("25%".into());
        ru.max_surge.get_or_insert_with(quarter);
        ru.max_unavailable.get_or_insert_with(quarter);
    }
}

/// Kubernetes' DefaultTolerationSeconds: a new pod that does not say how
/// long it tolerates its node being not ready or unreachable tolerates it
/// for 300 s (`spec` is the pod's). The node lifecycle controller evicts
/// pods of ReplicaSets and Jobs when that runs out.
pub fn default_tolerations(spec: &mut Value) {
    use spoke_api::core::taints;
    if !spec["tolerations"].is_array() {
        spec["tolerations"] = json!([]);
    }
    let Some(tols) = spec["tolerations"].as_array_mut() else {
        return;
    };
    for key in [taints::NOT_READY, taints::UNREACHABLE] {
        let covered = tols.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or("");
            let e = t["effect"].as_str().unwrap_or("");
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        });
        if !covered {
            tols.push(json!({
                "key": key, "operator": "Exists", "effect": "NoExecute",
                "tolerationSeconds": taints::DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

/// Whether a stored pod spec carries a toleration of not-ready or
/// unreachable nodes (defaulted at create, or the user's own).
pub fn has_node_state_tolerations(spec: &Value) -> bool {
    use spoke_api::core::taints;
    spec["tolerations"].as_array().is_some_and(|ts| {
        ts.iter()
            .any(|t| t["key"] == taints::NOT_READY || t["key"] == taints::UNREACHABLE)
    })
}

/// Jobs select their pods by a label the hub sets (`controller-uid`), unless
/// the user asks for `manualSelector`; the uid is known only at create time,
/// so [`select_job_pods`] finishes the job there.
fn default_and_validate_job(j: &mut Job) -> Vec<FieldError> {
    let s = &mut j.spec;
    s.parallelism.get_or_insert(1);
    s.completions.get_or_insert(1);
    s.backoff_limit.get_or_insert(6);
    s.suspend.get_or_insert(false);
    j.validate()
}

/// Label the hub puts on a Job's pods and selector.
pub const JOB_UID_LABEL: &str = "controller-uid";

/// On create: points a Job's selector at its own uid, as Kubernetes does.
pub fn select_job_pods(job: &mut Value, uid: &str) {
    if job.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let selector = LabelSelector {
        match_labels: [(JOB_UID_LABEL.to_string(), uid.to_string())].into(),
        ..Default::default()
    };
    job["spec"]["selector"] = serde_json::to_value(selector).unwrap_or(Value::Null);
    let name = job.pointer("/metadata/name").cloned();
    let labels = &mut job["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[JOB_UID_LABEL] = json!(uid);
    if let Some(name) = name {
        labels["job-name"] = name;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoke_api::resource::ResourceType;

    fn rt(word: &str) -> &'static ResourceType {
        ResourceType::lookup(word).unwrap()
    }

    #[test]
    fn deployments_get_kubernetes_defaults() {
        let d = admit(
            rt("deployments"),
            json!({"metadata": {"name": "web"}, "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                             "spec": {"containers": [{"name": "web", "image": "web:v1"}]}}}}),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    }

    #[test]
    fn secrets_fold_string_data_and_never_store_it() {
        let s = admit(
            rt("secrets"),
            json!({"metadata": {"name": "db"}, "stringData": {"password": "hunter2"},
                   "data": {"user": "YWRtaW4="}}),
        )
        .unwrap();
        assert_eq!(s["data"]["password"], "aHVudGVyMg==");
        assert_eq!(s["data"]["user"], "YWRtaW4=");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["type"], "Opaque");
    }

    #[test]
    fn node_taints_are_checked_at_admission() {
        let err = admit(
            rt("nodes"),
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "Never"}]}}),
        )
        .unwrap_err();
        let Error::Invalid { causes, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(causes[0].field, "spec.taints[0].effect");
        admit(
            rt("nodes"),
            json!({"metadata": {"name": "n"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        )
        .unwrap();
    }

    #[test]
    fn invalid_objects_name_the_kind_and_field() {
        let err = admit(
            rt("configmaps"),
            json!({"metadata": {"name": "c"}, "data": {"../etc": "x"}}),
        )
        .unwrap_err();
        let Error::Invalid { kind, causes, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(kind, "ConfigMap");
        assert_eq!(causes[0].field, "data[../etc]");
        let err = admit(
            rt("jobs"),
            json!({"metadata": {"name": "j"}, "spec": {"paralelism": 2}}),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown field \"paralelism\""),
            "{err}"
        );
    }

    #[test]
    fn job_pods_are_selected_by_the_jobs_uid() {
        let mut j = json!({"metadata": {"name": "batch"}, "spec": {"template": {"spec": {}}}});
        select_job_pods(&mut j, "u-1");
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["controller-uid"],
            "u-1"
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"]["job-name"],
            "batch"
        );
    }
}
