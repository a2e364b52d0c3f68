//! API discovery, as Kubernetes clients expect it before their first real
//! request: `/api` and `/apis` list the groups and versions, `/api/v1` and
//! `/apis/{group}/{version}` the resources of each with their verbs and
//! short names (what `kubectl get deploy` resolves through). Built from the
//! same kind table as the router.
//!
//! `/openapi/v2` answers the smallest valid protobuf document kubectl
//! accepts (an empty Swagger 2.0 spec): kubectl then skips client-side
//! schema validation, and the hub validates every object anyway. The real
//! description is the OpenAPI 3 document at `/openapi/v3`.

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use spoke_api::resource::{RESOURCES, ResourceType};

use super::{Error, State};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The groups the hub serves, in the order clients should prefer them.
fn groups() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for rt in RESOURCES {
        if !rt.group.is_empty() && !out.contains(&rt.group) {
            out.push(rt.group);
        }
    }
    out
}

fn resource_list(group_version: &str, kinds: Vec<&ResourceType>) -> Value {
    let mut resources = Vec::new();
    for rt in kinds {
        let mut entry = json!({
            "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
            "kind": rt.kind, "verbs": VERBS, "shortNames": rt.short_names,
        });
        // `kubectl get all` lists the kinds of the "all" category, which in
        // Kubernetes are the workloads and their pods.
        if matches!(
            rt.kind,
            "Pod" | "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" | "CronJob"
        ) {
            entry["categories"] = json!(["all"]);
        }
        resources.push(entry);
        let sub = |name: &str, kind: &str, group: Option<&str>, verbs: &[&str]| {
            let mut v = json!({
                "name": format!("{}/{name}", rt.plural), "singularName": "",
                "namespaced": rt.namespaced, "kind": kind, "verbs": verbs,
            });
            if let Some(g) = group {
                v["group"] = json!(g);
                v["version"] = json!("v1");
            }
            v
        };
        if rt.status {
            resources.push(sub("status", rt.kind, None, &["get", "patch", "update"]));
        }
        if rt.scale {
            resources.push(sub(
                "scale",
                "Scale",
                Some("autoscaling"),
                &["get", "patch", "update"],
            ));
        }
        if rt.kind == "Pod" {
            resources.push(sub("log", "Pod", None, &["get"]));
            resources.push(sub("eviction", "Eviction", Some("policy"), &["create"]));
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

pub(super) fn routes() -> Router<State> {
    Router::new()
        .route(
            "/api",
            get(|| async {
                axum::Json(json!({
                    "kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
                }))
            }),
        )
        .route(
            "/apis",
            get(|| async {
                let groups: Vec<Value> = groups()
                    .into_iter()
                    .map(|g| {
                        let gv = json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                    })
                    .collect();
                axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            }),
        )
        .route(
            "/api/v1",
            get(|| async {
                let kinds = RESOURCES.iter().filter(|r| r.group.is_empty()).collect();
                axum::Json(resource_list("v1", kinds))
            }),
        )
        .route(
            "/apis/{group}",
            get(|Path(group): Path<String>| async move {
                if !groups().contains(&group.as_str()) {
                    return Err(Error::NotFoundPath(format!("the server could not find the requested resource (group {group})")));
                }
                let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
                Ok(axum::Json(json!({"kind": "APIGroup", "apiVersion": "v1", "name": group,
                    "versions": [gv.clone()], "preferredVersion": gv})))
            }),
        )
        .route(
            "/apis/{group}/{version}",
            get(|Path((group, version)): Path<(String, String)>| async move {
                let kinds: Vec<&ResourceType> = RESOURCES
                    .iter()
                    .filter(|r| r.group == group && r.version == version)
                    .collect();
                if kinds.is_empty() {
                    return Err(Error::NotFoundPath(format!(
                        "the server could not find the requested resource ({group}/{version})"
                    )));
                }
                Ok(axum::Json(resource_list(&format!("{group}/{version}"), kinds)))
            }),
        )
        .route(
            "/openapi/v2",
            get(|| async {
                // Swagger { swagger: "2.0" } as protobuf: field 1, length 3.
                (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    &[0x0a_u8, 0x03, b'2', b'.', b'0'][..],
                )
                    .into_response()
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_carry_verbs_short_names_and_subresources() {
        let apps = resource_list(
            "apps/v1",
            RESOURCES.iter().filter(|r| r.group == "apps").collect(),
        );
        let names: Vec<&str> = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"deployments"));
        assert!(names.contains(&"deployments/scale"));
        assert!(names.contains(&"daemonsets/status"));
        let deploy = &apps["resources"][0];
        assert_eq!(deploy["shortNames"], json!(["deploy"]));
        assert_eq!(deploy["categories"], json!(["all"]));
        assert!(
            deploy["verbs"]
                .as_array()
                .unwrap()
                .contains(&json!("watch"))
        );
        assert_eq!(groups(), ["apps", "batch"]);
    }
}
