//! The OpenAPI 3.0 document of the API, served at `/openapi/v3`, built
//! from the same table the router is built from ([`RESOURCES`]) and from
//! the API types' own schemas, so it cannot drift from what is served.
//!
//! `?watch=true` is left out of the list operations: a watch is a stream
//! that does not end, which generic tools (and fuzzers) cannot consume;
//! `docs/api.md` describes it.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use spoke_api::apps::{DaemonSet, Deployment, ReplicaSet};
use spoke_api::batch::{CronJob, Job};
use spoke_api::core::{Namespace, Node, Pod};
use spoke_api::data::{ConfigMap, Secret};
use spoke_api::event::Event;
use spoke_api::meta::Status;
use spoke_api::policy::{LimitRange, ResourceQuota};
use spoke_api::resource::{RESOURCES, ResourceType};

fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

fn kind_schema(generator: &mut SchemaGenerator, kind: &str) -> Value {
    match kind {
        "Namespace" => schema::<Namespace>(generator),
        "Pod" => schema::<Pod>(generator),
        "Node" => schema::<Node>(generator),
        "Deployment" => schema::<Deployment>(generator),
        "ReplicaSet" => schema::<ReplicaSet>(generator),
        "DaemonSet" => schema::<DaemonSet>(generator),
        "Job" => schema::<Job>(generator),
        "CronJob" => schema::<CronJob>(generator),
        "ConfigMap" => schema::<ConfigMap>(generator),
        "Secret" => schema::<Secret>(generator),
        "Event" => schema::<Event>(generator),
        "ResourceQuota" => schema::<ResourceQuota>(generator),
        "LimitRange" => schema::<LimitRange>(generator),
        _ => json!({"type": "object"}),
    }
}

fn query(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description})
}

/// Object names are DNS subdomains, namespaces DNS labels (as the API
/// validates them): saying so lets generic clients and fuzzers build paths
/// that can exist instead of 404s.
fn path_param(name: &str) -> Value {
    let schema = if name == "namespace" {
        json!({"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63})
    } else {
        json!({"type": "string", "pattern": "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253})
    };
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn body(schema: &Value) -> Value {
    json!({"required": true, "content": {
        "application/json": {"schema": schema},
        "application/yaml": {"schema": schema},
    }})
}

fn reply(code: &str, schema: &Value) -> Value {
    json!({
        code: {"description": "OK", "content": {"application/json": {"schema": schema}}},
        "default": {"description": "a Status object",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
    })
}

fn list_params() -> Vec<Value> {
    vec![
        query(
            "labelSelector",
            json!({"type": "string"}),
            "e.g. app=web,env in (prod,staging),!legacy",
        ),
        query(
            "fieldSelector",
            json!({"type": "string"}),
            "metadata.name, metadata.namespace, spec.nodeName, status.phase, involvedObject.*, type; = and !=",
        ),
        query(
            "limit",
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": i64::MAX}),
            "page size; the reply's metadata.continue fetches the next page",
        ),
        query(
            "continue",
            json!({"type": "string"}),
            "the token from the previous page",
        ),
        query(
            "resourceVersion",
            json!({"type": "string"}),
            "for watches: where to resume",
        ),
    ]
}

fn delete_params() -> Vec<Value> {
    vec![
        query(
            "gracePeriodSeconds",
            json!({"type": "integer", "minimum": 0}),
            "pods: how long the agent may take to stop it",
        ),
        query(
            "propagationPolicy",
            json!({"type": "string", "enum": ["Background", "Foreground", "Orphan"]}),
            "what happens to dependents",
        ),
    ]
}

fn write_params() -> Vec<Value> {
    vec![query(
        "fieldValidation",
        json!({"type": "string", "enum": ["Strict", "Warn", "Ignore"]}),
        "unknown fields: refuse (default), drop with a Warning header, or drop",
    )]
}

fn op(id: String, params: Vec<Value>, request: Option<Value>, responses: Value) -> Value {
    let mut o = json!({"operationId": id, "parameters": params, "responses": responses});
    if let Some(r) = request {
        o["requestBody"] = r;
    }
    o
}

/// OpenAPI links from a create's answer to every operation on the object
/// it made: clients (and stateful fuzzers) learn that the name and
/// namespace in the answer address it.
fn links(rt: &ResourceType) -> Value {
    let kind = rt.kind;
    let mut ids = vec![
        format!("read{kind}"),
        format!("replace{kind}"),
        format!("patch{kind}"),
        format!("delete{kind}"),
    ];
    if rt.status {
        ids.extend([
            format!("read{kind}Status"),
            format!("replace{kind}Status"),
            format!("patch{kind}Status"),
        ]);
    }
    if rt.scale {
        ids.extend([
            format!("read{kind}Scale"),
            format!("replace{kind}Scale"),
            format!("patch{kind}Scale"),
        ]);
    }
    if kind == "Pod" {
        ids.push("readPodLog".to_string());
    }
    let mut parameters = json!({"name": "$response.body#/metadata/name"});
    if rt.namespaced {
        parameters["namespace"] = json!("$response.body#/metadata/namespace");
    }
    ids.into_iter()
        .map(|id| {
            let link = json!({"operationId": id, "parameters": parameters});
            (id, link)
        })
        .collect::<Map<String, Value>>()
        .into()
}

fn paths_for(rt: &ResourceType, obj: &Value, paths: &mut Map<String, Value>) {
    let kind = rt.kind;
    let list = json!({"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"},
        "metadata": {"$ref": "#/components/schemas/ListMeta"},
        "items": {"type": "array", "items": obj}}});
    let ns_param = || {
        if rt.namespaced {
            vec![path_param("namespace")]
        } else {
            vec![]
        }
    };
    let with = |mut base: Vec<Value>, more: Vec<Value>| {
        base.extend(more);
        base
    };
    let coll = if rt.namespaced {
        rt.collection_path(Some("{namespace}"))
    } else {
        rt.collection_path(None)
    };
    if rt.namespaced {
        paths.insert(
            rt.collection_path(None),
            json!({"get": op(format!("list{kind}ForAllNamespaces"), list_params(), None, reply("200", &list))}),
        );
    }
    let mut created = reply("201", obj);
    created["201"]["links"] = links(rt);
    paths.insert(
        coll.clone(),
        json!({
            "get": op(format!("list{kind}"), with(ns_param(), list_params()), None, reply("200", &list)),
            "post": op(format!("create{kind}"), with(ns_param(), write_params()), Some(body(obj)), created),
            "delete": op(format!("deleteCollection{kind}"), with(ns_param(), with(list_params(), delete_params())), None, reply("200", &list)),
        }),
    );
    let item_params = || with(ns_param(), vec![path_param("name")]);
    let patch_body = json!({"required": true, "content": {
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
        "application/json-patch+json": {"schema": {"type": "array", "items": {
            "type": "object", "required": ["op", "path"],
            "properties": {"op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
                           "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}}}},
    }});
    let item = format!("{coll}/{{name}}");
    paths.insert(
        item.clone(),
        json!({
            "get": op(format!("read{kind}"), item_params(), None, reply("200", obj)),
            "put": op(format!("replace{kind}"), with(item_params(), write_params()), Some(body(obj)), reply("200", obj)),
            "patch": op(format!("patch{kind}"), with(item_params(), write_params()), Some(patch_body.clone()), reply("200", obj)),
            "delete": op(format!("delete{kind}"), with(item_params(), delete_params()), None, reply("200", obj)),
        }),
    );
    if rt.status {
        paths.insert(
            format!("{item}/status"),
            json!({
                "get": op(format!("read{kind}Status"), item_params(), None, reply("200", obj)),
                "put": op(format!("replace{kind}Status"), item_params(), Some(body(obj)), reply("200", obj)),
                "patch": op(format!("patch{kind}Status"), item_params(), Some(patch_body.clone()), reply("200", obj)),
            }),
        );
    }
    if rt.scale {
        let scale = json!({"$ref": "#/components/schemas/Scale"});
        paths.insert(
            format!("{item}/scale"),
            json!({
                "get": op(format!("read{kind}Scale"), item_params(), None, reply("200", &scale)),
                "put": op(format!("replace{kind}Scale"), item_params(), Some(body(&scale)), reply("200", &scale)),
                "patch": op(format!("patch{kind}Scale"), item_params(), Some(patch_body), reply("200", &scale)),
            }),
        );
    }
    if rt.kind == "Pod" {
        paths.insert(
            format!("{item}/log"),
            json!({"get": {
                "operationId": "readPodLog",
                "parameters": with(item_params(), vec![
                    query("tailLines", json!({"type": "integer", "minimum": 0}), "last lines only"),
                    query("sinceSeconds", json!({"type": "integer", "minimum": 1}), "lines of the last N seconds only"),
                    query("sinceTime", json!({"type": "string", "format": "date-time"}), "lines written at or after this RFC 3339 time (UTC) only"),
                    query("previous", json!({"type": "boolean"}), "the previous instance of the container"),
                    query("container", json!({"type": "string"}), "the container (default: the pod's first)"),
                ]),
                "responses": {"200": {"description": "the log", "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "default": {"description": "a Status object", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}}},
            }}),
        );
    }
}

const DNS_SUBDOMAIN: &str = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$";
const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Says in the schemas what the API's validation requires and the types
/// alone do not: each kind's own `apiVersion` and `kind`, names that are
/// DNS names, and the fields without which an object is refused. Clients
/// read it as documentation; fuzzers then build objects the hub accepts
/// and reach the code behind them.
fn constrain(schemas: &mut Map<String, Value>) {
    fn set(schemas: &mut Map<String, Value>, name: &str, f: impl FnOnce(&mut Value)) {
        if let Some(s) = schemas.get_mut(name) {
            f(s);
        }
    }
    fn require(s: &mut Value, fields: &[&str]) {
        let mut list = s["required"].as_array().cloned().unwrap_or_default();
        for f in fields {
            if !list.iter().any(|v| v == f) {
                list.push(json!(f));
            }
        }
        s["required"] = Value::Array(list);
    }
    for rt in RESOURCES {
        let api_version = rt.api_version();
        set(schemas, rt.kind, |s| {
            s["properties"]["apiVersion"] = json!({"type": "string", "enum": [api_version]});
            s["properties"]["kind"] = json!({"type": "string", "enum": [rt.kind]});
            require(s, &["metadata"]);
            if matches!(
                rt.kind,
                "Pod" | "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" | "CronJob"
            ) {
                require(s, &["spec"]);
            }
        });
    }
    set(schemas, "ObjectMeta", |s| {
        s["properties"]["name"] = json!({"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253,
            "description": "required, unless generateName is given on create"});
        s["properties"]["namespace"] =
            json!({"type": "string", "pattern": DNS_LABEL, "maxLength": 63});
        require(s, &["name"]);
    });
    set(schemas, "PodSpec", |s| {
        s["properties"]["containers"]["minItems"] = json!(1);
        require(s, &["containers"]);
    });
    set(schemas, "Container", |s| {
        s["properties"]["name"] = json!({"type": "string", "pattern": DNS_LABEL, "maxLength": 63});
        s["properties"]["image"]["minLength"] = json!(1);
        require(s, &["name", "image"]);
    });
    for spec in ["DeploymentSpec", "ReplicaSetSpec", "DaemonSetSpec"] {
        set(schemas, spec, |s| require(s, &["selector", "template"]));
    }
    set(schemas, "PodTemplateSpec", |s| require(s, &["spec"]));
    set(schemas, "JobSpec", |s| require(s, &["template"]));
    set(schemas, "JobTemplateSpec", |s| require(s, &["spec"]));
    set(schemas, "CronJobSpec", |s| {
        require(s, &["schedule", "jobTemplate"])
    });
    set(schemas, "Event", |s| require(s, &["involvedObject"]));
    set(schemas, "ObjectReference", |s| require(s, &["name"]));
}

/// The whole document.
pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut paths = Map::new();
    for rt in RESOURCES {
        let obj = kind_schema(&mut generator, rt.kind);
        paths_for(rt, &obj, &mut paths);
    }
    let status = schema::<Status>(&mut generator);
    let list_meta = schema::<spoke_api::meta::ListMeta>(&mut generator);
    paths.insert(
        "/version".into(),
        json!({"get": {"operationId": "getVersion", "responses": {"200": {"description": "version",
            "content": {"application/json": {"schema": {"type": "object"}}}}}}}),
    );
    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    constrain(&mut schemas);
    schemas.entry("Status".to_string()).or_insert(status);
    schemas.entry("ListMeta".to_string()).or_insert(list_meta);
    schemas.insert(
        "Scale".into(),
        json!({"type": "object", "properties": {
            "apiVersion": {"type": "string"}, "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}}},
            "status": {"type": "object"}}}),
    );
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Spoke hub API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Kubernetes-shaped API of a Spoke hub. Lists also take ?watch=true (a stream of JSON lines); see docs/api.md."},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_path_is_documented_with_a_schema() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        for rt in RESOURCES {
            let item = if rt.namespaced {
                format!("{}/{{name}}", rt.collection_path(Some("{namespace}")))
            } else {
                format!("{}/{{name}}", rt.collection_path(None))
            };
            let ops = &paths[&item];
            for verb in ["get", "put", "patch", "delete"] {
                assert!(ops.get(verb).is_some(), "{item} {verb}");
            }
            assert_eq!(
                paths.contains_key(&format!("{item}/scale")),
                rt.scale,
                "{item}"
            );
        }
        // References resolve.
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref to {name}");
        }
        // Every link from a create names an operation that exists and
        // takes exactly the parameters the link fills in.
        let mut ops = std::collections::HashMap::new();
        for item in paths.values() {
            for op in item.as_object().unwrap().values() {
                ops.insert(op["operationId"].as_str().unwrap().to_string(), op);
            }
        }
        let mut linked = 0;
        for rt in RESOURCES {
            let create = &ops[&format!("create{}", rt.kind)];
            for (id, link) in create["responses"]["201"]["links"].as_object().unwrap() {
                let target = ops
                    .get(id)
                    .unwrap_or_else(|| panic!("link to missing {id}"));
                let mut wanted: Vec<&str> = target["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let mut given: Vec<&str> = link["parameters"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .map(String::as_str)
                    .collect();
                wanted.sort();
                given.sort();
                assert_eq!(wanted, given, "{id}");
                linked += 1;
            }
        }
        assert!(linked >= 4 * RESOURCES.len(), "{linked} links");
        // The pod schema knows its containers.
        let pod = &schemas["Pod"];
        assert!(pod.to_string().contains("containers"), "{pod}");
    }
}
