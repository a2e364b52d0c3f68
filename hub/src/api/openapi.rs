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

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
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
            json!({"type": "integer", "minimum": 0}),
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
    paths.insert(
        coll.clone(),
        json!({
            "get": op(format!("list{kind}"), with(ns_param(), list_params()), None, reply("200", &list)),
            "post": op(format!("create{kind}"), with(ns_param(), write_params()), Some(body(obj)), reply("201", obj)),
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
        // The pod schema knows its containers.
        let pod = &schemas["Pod"];
        assert!(pod.to_string().contains("containers"), "{pod}");
    }
}
