//! The three patch formats of `PATCH` (chosen by Content-Type):
//!
//! - `application/merge-patch+json`: JSON merge patch (RFC 7386): objects
//!   merge, `null` deletes, anything else replaces (lists too).
//! - `application/json-patch+json`: JSON patch (RFC 6902): a list of
//!   `add`/`remove`/`replace`/`move`/`copy`/`test` operations.
//! - `application/strategic-merge-patch+json` (what `kubectl patch` sends
//!   by default): a merge patch, except that the lists Kubernetes merges by
//!   a key (containers by `name`, ports by `containerPort`, ...) are merged
//!   element by element, and `$patch: delete` removes one element.
//!
//! Each is a pure function of (current, patch); the handler then treats the
//! result like a PUT body.

use serde_json::{Map, Value};

/// Which patch a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Merge,
    Json,
    Strategic,
}

impl Kind {
    /// From a Content-Type header value.
    pub fn from_content_type(ct: &str) -> Option<Kind> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/merge-patch+json" => Some(Kind::Merge),
            "application/json-patch+json" => Some(Kind::Json),
            "application/strategic-merge-patch+json" => Some(Kind::Strategic),
            _ => None,
        }
    }
}

/// Applies `patch` of `kind` to `target`; errors say which operation failed.
pub fn apply(kind: Kind, target: &Value, patch: &Value) -> Result<Value, String> {
    match kind {
        Kind::Merge => {
            if !patch.is_object() {
                return Err("a merge patch must be a JSON object".into());
            }
            Ok(merge(target, patch))
        }
        Kind::Strategic => {
            if !patch.is_object() {
                return Err("a strategic merge patch must be a JSON object".into());
            }
            strategic(target, patch, "")
        }
        Kind::Json => json_patch(target, patch),
    }
}

/// RFC 7386.
pub fn merge(target: &Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            out.remove(k);
        } else {
            let merged = merge(out.get(k).unwrap_or(&Value::Null), v);
            out.insert(k.clone(), merged);
        }
    }
    Value::Object(out)
}

/// The merge key of a list at `path` (dotted, list indices dropped), as
/// Kubernetes' API types declare them.
fn merge_key(path: &str) -> Option<&'static str> {
    let last = path.rsplit('.').next().unwrap_or(path);
    Some(match last {
        "containers" | "initContainers" | "env" | "volumes" | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "tolerations" => "key",
        _ => return None,
    })
}

fn strategic(target: &Value, patch: &Value, path: &str) -> Result<Value, String> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    let mut out = match target {
        Value::Object(t) => t.clone(),
        _ => Map::new(),
    };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" {
            // Ordering hints kubectl sends; the merge keeps the stored order.
            continue;
        }
        let at = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let next = match (out.get(k), v, merge_key(&at)) {
            (Some(Value::Array(cur)), Value::Array(items), Some(key)) => {
                Value::Array(merge_list(cur, items, key, &at)?)
            }
            (Some(cur), Value::Object(_), _) => strategic(cur, v, &at)?,
            (None, Value::Array(items), Some(_)) => {
                // Nothing to merge into: keep the elements, minus directives.
                Value::Array(
                    items
                        .iter()
                        .filter(|i| i.get("$patch").is_none())
                        .cloned()
                        .collect(),
                )
            }
            (None, Value::Object(_), _) => strategic(&Value::Null, v, &at)?,
            _ => v.clone(),
        };
        out.insert(k.clone(), next);
    }
    Ok(Value::Object(out))
}

fn merge_list(cur: &[Value], items: &[Value], key: &str, at: &str) -> Result<Vec<Value>, String> {
    let mut out: Vec<Value> = cur.to_vec();
    for item in items {
        let id = item
            .get(key)
            .ok_or_else(|| format!("{at}: every element needs its merge key \"{key}\""))?;
        let pos = out.iter().position(|e| e.get(key) == Some(id));
        match (item.get("$patch").and_then(Value::as_str), pos) {
            (Some("delete"), Some(i)) => {
                out.remove(i);
            }
            (Some("delete"), None) => {}
            (Some(other), _) if other != "merge" => {
                return Err(format!("{at}: unknown $patch directive \"{other}\""));
            }
            (_, Some(i)) => {
                let mut clean = item.clone();
                if let Some(m) = clean.as_object_mut() {
                    m.remove("$patch");
                }
                out[i] = strategic(&out[i], &clean, at)?;
            }
            (_, None) => out.push(item.clone()),
        }
    }
    Ok(out)
}

/// RFC 6902.
fn json_patch(target: &Value, patch: &Value) -> Result<Value, String> {
    let ops = patch
        .as_array()
        .ok_or("a JSON patch must be a list of operations")?;
    let mut doc = target.clone();
    for (i, op) in ops.iter().enumerate() {
        let fail = |why: String| format!("operation {i}: {why}");
        let name = op
            .get("op")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("missing \"op\"".into()))?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("missing \"path\"".into()))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| fail(format!("\"{name}\" needs a \"value\"")))
        };
        let from = || {
            op.get("from")
                .and_then(Value::as_str)
                .ok_or_else(|| fail(format!("\"{name}\" needs a \"from\"")))
        };
        match name {
            "add" => add(&mut doc, path, value()?).map_err(fail)?,
            "remove" => {
                remove(&mut doc, path).map_err(fail)?;
            }
            "replace" => {
                remove(&mut doc, path).map_err(fail)?;
                add(&mut doc, path, value()?).map_err(fail)?;
            }
            "move" => {
                let from = from()?;
                if path.starts_with(&format!("{from}/")) {
                    return Err(fail(format!(
                        "cannot move {from} into its own child {path}"
                    )));
                }
                let v = remove(&mut doc, from).map_err(fail)?;
                add(&mut doc, path, v).map_err(fail)?;
            }
            "copy" => {
                let v = doc.pointer(from()?).cloned().ok_or_else(|| {
                    fail(format!(
                        "\"from\" path {} does not exist",
                        from().unwrap_or("")
                    ))
                })?;
                add(&mut doc, path, v).map_err(fail)?;
            }
            "test" => {
                let want = value()?;
                if doc.pointer(path) != Some(&want) {
                    return Err(fail(format!("test failed: {path} is not {want}")));
                }
            }
            other => return Err(fail(format!("unknown op \"{other}\""))),
        }
    }
    Ok(doc)
}

/// Splits `/a/b/c` into the parent pointer and the unescaped last token.
fn split_pointer(path: &str) -> Result<(&str, String), String> {
    if path.is_empty() {
        return Err("the whole document cannot be the target".into());
    }
    if !path.starts_with('/') {
        return Err(format!("path \"{path}\" must start with '/'"));
    }
    let cut = path.rfind('/').unwrap_or(0);
    let token = path[cut + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..cut], token))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let (parent, token) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => {
            m.insert(token, value);
            Ok(())
        }
        Some(Value::Array(a)) => {
            let i = if token == "-" {
                a.len()
            } else {
                token
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i <= a.len())
                    .ok_or_else(|| format!("index \"{token}\" is out of bounds in {parent}"))?
            };
            a.insert(i, value);
            Ok(())
        }
        Some(_) => Err(format!("{parent} is neither an object nor a list")),
        None => Err(format!("path {parent} does not exist")),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, token) = split_pointer(path)?;
    let missing = || format!("path {path} does not exist");
    match doc.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&token).ok_or_else(missing),
        Some(Value::Array(a)) => {
            let i = token
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .ok_or_else(missing)?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        let patch = json!({"a": "z", "c": {"f": null}, "l": [3]});
        assert_eq!(
            apply(Kind::Merge, &target, &patch).unwrap(),
            json!({"a": "z", "c": {"d": "e"}, "l": [3]})
        );
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let target = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"list": [1, 2, 3]}});
        let patch = json!([
            {"op": "test", "path": "/metadata/labels/a", "value": "1"},
            {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
            {"op": "remove", "path": "/spec/list/0"},
            {"op": "add", "path": "/spec/list/-", "value": 4},
            {"op": "replace", "path": "/spec/list/0", "value": 9},
            {"op": "copy", "from": "/spec/list", "path": "/spec/copy"},
            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/moved"},
        ]);
        assert_eq!(
            apply(Kind::Json, &target, &patch).unwrap(),
            json!({"metadata": {"labels": {"b/c": "2", "moved": "1"}},
                   "spec": {"list": [9, 3, 4], "copy": [9, 3, 4]}})
        );
        for (bad, needle) in [
            (
                json!([{"op": "test", "path": "/x", "value": 1}]),
                "test failed",
            ),
            (json!([{"op": "remove", "path": "/nope"}]), "does not exist"),
            (
                json!([{"op": "add", "path": "/spec/list/7", "value": 1}]),
                "out of bounds",
            ),
            (json!([{"op": "frobnicate", "path": "/x"}]), "unknown op"),
            (json!({"op": "add"}), "list of operations"),
        ] {
            let err = apply(Kind::Json, &target, &bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}]},
            {"name": "b", "image": "b:1"}
        ]}});
        let patch = json!({"spec": {"containers": [
            {"name": "a", "image": "a:2", "env": [{"name": "Y", "value": "2"}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "c:1"}
        ]}});
        let out = apply(Kind::Strategic, &pod, &patch).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [
                {"name": "a", "image": "a:2", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "c", "image": "c:1"}
            ]}})
        );
        // Lists without a merge key are replaced, as in a merge patch.
        let out = apply(
            Kind::Strategic,
            &json!({"spec": {"args": ["a", "b"]}}),
            &json!({"spec": {"args": ["c"]}}),
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"args": ["c"]}}));
    }
}
