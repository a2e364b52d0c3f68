//! Property tests of what the API reads from clients before the store:
//! admission of every kind (strict decoding, defaults, validation), and the
//! label and field selectors of lists and watches. Fixed budgets here;
//! `scripts/fuzz` runs more (`PROPTEST_CASES`).

use axum::http::Uri;
use proptest::prelude::*;
use serde_json::{Value, json};
use spoke_api::fuzz::{self, config, mutated};
use spoke_api::resource::ResourceType;

use super::Error;
use super::admission::admit;
use super::objects::{Filter, ListQuery};

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"restartPolicy": "Always", "containers": [{
               "name": "main", "image": "hello:v1", "args": ["x"],
               "env": [{"name": "A", "value": "1"}],
               "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}},
               "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}]}],
             "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]}})
}

/// One good object of every kind admission knows.
fn seeds() -> Vec<(&'static str, Value)> {
    let selector = json!({"matchLabels": {"app": "web"}});
    let mut job_template = template();
    job_template["spec"]["restartPolicy"] = json!("OnFailure");
    vec![
        (
            "pods",
            json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                        "spec": template()["spec"]}),
        ),
        (
            "nodes",
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "pi-1"},
                         "spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
        ),
        (
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "farm"}}),
        ),
        (
            "deployments",
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                               "spec": {"replicas": 3, "selector": selector, "template": template(),
                                        "strategy": {"type": "RollingUpdate",
                                                     "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}}}),
        ),
        (
            "replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
                               "spec": {"replicas": 2, "selector": selector, "template": template()}}),
        ),
        (
            "daemonsets",
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "web"},
                              "spec": {"selector": selector, "template": template()}}),
        ),
        (
            "jobs",
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "batch"},
                        "spec": {"completions": 3, "parallelism": 2, "backoffLimit": 2,
                                 "template": job_template}}),
        ),
        (
            "cronjobs",
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "report"},
                            "spec": {"schedule": "*/10 * * * *", "concurrencyPolicy": "Forbid",
                                     "jobTemplate": {"spec": {"template": job_template}}}}),
        ),
        (
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"},
                              "data": {"greeting": "hi"}, "binaryData": {"b": "AAE="}}),
        ),
        (
            "secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
                           "type": "Opaque", "data": {"a": "aGk="}, "stringData": {"b": "x"}}),
        ),
        (
            "events",
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
                          "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
                          "reason": "Started", "message": "started", "type": "Normal"}),
        ),
        (
            "resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
                                  "spec": {"hard": {"pods": "10", "limits.cpu": "2", "limits.memory": "1Gi"}}}),
        ),
        (
            "limitranges",
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"},
                               "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"},
                                                    "default": {"cpu": "100m", "memory": "16Mi"}}]}}),
        ),
    ]
}

fn rt(plural: &str) -> &'static ResourceType {
    ResourceType::lookup(plural).unwrap_or_else(|| panic!("no kind {plural}"))
}

fn kind_and_doc() -> impl Strategy<Value = (&'static str, Value)> {
    (0..seeds().len()).prop_flat_map(|i| {
        let (plural, seed) = seeds().swap_remove(i);
        mutated(vec![seed], fuzz::OBJECT_KEYS).prop_map(move |doc| (plural, doc))
    })
}

#[test]
fn every_seed_is_admitted() {
    for (plural, seed) in seeds() {
        admit(rt(plural), seed).unwrap_or_else(|e| panic!("{plural}: {e}"));
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Any object (the hub refuses non-objects earlier): admitted, or
    /// refused as invalid with causes that name the field; never a panic
    /// nor an internal error. What is admitted is what the store holds,
    /// and admitting it again (a PUT of what was read) changes nothing.
    #[test]
    fn admission_accepts_or_names_the_field((plural, doc) in kind_and_doc()) {
        prop_assume!(doc.is_object());
        match admit(rt(plural), doc.clone()) {
            Ok(stored) => {
                let again = admit(rt(plural), stored.clone())
                    .map_err(|e| TestCaseError::fail(format!("{plural}: re-admitting {stored}: {e}")))?;
                prop_assert_eq!(again, stored, "{}", plural);
            }
            Err(Error::Invalid { causes, .. }) => {
                prop_assert!(!causes.is_empty());
                for c in &causes {
                    let named = !c.field.is_empty()
                        || c.message.contains('`')
                        || c.message == "unknown field \"\"";
                    prop_assert!(named, "{}: {:?} for {}", plural, c, doc);
                }
            }
            Err(other) => prop_assert!(false, "{}: {} for {}", plural, other, doc),
        }
    }

    /// `?labelSelector=&fieldSelector=` from anyone: parsed, or a 400 that
    /// says which of the two is wrong; never a panic. A field term of a
    /// parsed filter holds for what it matches.
    #[test]
    fn list_filters_parse_or_say_which(
        labels in prop_oneof![fuzz::text(), "[a-z!=, ()]{0,20}"],
        fields in prop_oneof![
            fuzz::text(),
            "((metadata\\.name|spec\\.nodeName|status\\.phase|reason|x)(=|==|!=)?[a-z0-9-]{0,5},?){0,3}",
        ],
        object in fuzz::json(fuzz::OBJECT_KEYS),
    ) {
        let q = ListQuery {
            label_selector: Some(labels.clone()),
            field_selector: Some(fields.clone()),
            ..Default::default()
        };
        match Filter::parse(&q) {
            Ok(filter) => {
                let _ = filter.matches(&object);
            }
            Err(Error::BadRequest(m)) => prop_assert!(
                m.starts_with("labelSelector: ") || m.starts_with("fieldSelector: "),
                "{}", m
            ),
            Err(other) => prop_assert!(false, "{}", other),
        }
    }

    /// Authorization reads `fieldSelector` from the query itself (a node's
    /// token may list only the pods bound to it); the list handler reads it
    /// through axum. Whenever both read one, it must be the same text, or a
    /// node could be allowed one selector and served another.
    #[test]
    fn authorization_and_the_handler_read_the_same_field_selector(
        parts in prop::collection::vec(prop_oneof![
            Just("fieldSelector=spec.nodeName%3Dpi-1".to_string()),
            Just("fieldSelector=spec.nodeName=pi-1".to_string()),
            Just("fieldSelector=spec.nodeName%3Dpi-2".to_string()),
            Just("field%53elector=spec.nodeName%3Dpi-2".to_string()),
            Just("fieldSelector=spec.nodeName%3D%3Dpi-1+".to_string()),
            Just("fieldSelector".to_string()),
            Just("watch=1".to_string()),
            "[a-zA-Z%=+&0-9.;-]{0,16}",
            (Just("fieldSelector="), "[a-z%0-9+=.,!-]{0,16}").prop_map(|(k, v)| format!("{k}{v}")),
        ], 0..4),
    ) {
        let query = parts.join("&");
        let attrs = crate::auth::request::parse("GET", "/api/v1/pods", Some(&query));
        let uri: Uri = match format!("/api/v1/pods?{query}").parse() {
            Ok(u) => u,
            // Not a request line axum would ever see.
            Err(_) => return Ok(()),
        };
        let served = axum::extract::Query::<ListQuery>::try_from_uri(&uri);
        if let (Some(authorized), Ok(served)) = (&attrs.field_selector, &served) {
            prop_assert_eq!(Some(authorized), served.field_selector.as_ref(), "query {:?}", query);
        }
    }
}
