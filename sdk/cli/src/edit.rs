//! Verbs that change one field of existing objects: `scale`, `set image`,
//! `label`, `annotate`. Each is a read (to check what the user asked
//! against what is there) and one write at the version read.

use anyhow::anyhow;
use serde_json::{Map, Value, json};
use spoke_api::resource::ResourceType;
use spoke_client::Client;

use crate::get::qualified;

/// Splits `KIND/NAME [more]` or `KIND NAME [more]` into the kind, the name
/// and the rest.
pub fn object_and_rest(
    args: &[String],
) -> anyhow::Result<(&'static ResourceType, String, &[String])> {
    match args {
        [first, rest @ ..] if first.contains('/') => {
            let (kind, name) = first.split_once('/').expect("checked");
            Ok((crate::lookup(kind)?, name.to_string(), rest))
        }
        [kind, name, rest @ ..] => Ok((crate::lookup(kind)?, name.clone(), rest)),
        _ => Err(anyhow!("say which object: KIND/NAME or KIND NAME")),
    }
}

fn scoped<'a>(rt: &ResourceType, ns: &'a str) -> Option<&'a str> {
    rt.namespaced.then_some(ns)
}

async fn read(client: &Client, rt: &ResourceType, ns: &str, name: &str) -> anyhow::Result<Value> {
    let ns = scoped(rt, ns);
    client
        .get(&rt.object_path(ns, name))
        .await
        .map_err(|e| match e.code() {
            Some(404) => anyhow!(crate::not_found(rt, ns, name)),
            _ => e.into(),
        })
}

/// `spoke scale KIND/NAME --replicas=N`, through the `scale` subresource.
pub async fn scale(
    client: &Client,
    ns: &str,
    target: &[String],
    replicas: i64,
) -> anyhow::Result<()> {
    let (rt, name, rest) = object_and_rest(target)?;
    if !rest.is_empty() {
        return Err(anyhow!("unexpected arguments: {}", rest.join(" ")));
    }
    if !rt.scale {
        return Err(anyhow!(
            "{} cannot be scaled (deployments and replicasets can)",
            rt.plural
        ));
    }
    if replicas < 0 {
        return Err(anyhow!("--replicas must be 0 or more, not {replicas}"));
    }
    let ns = scoped(rt, ns);
    client
        .patch(
            &format!("{}/scale", rt.object_path(ns, &name)),
            "application/merge-patch+json",
            &json!({"spec": {"replicas": replicas}}),
        )
        .await
        .map_err(|e| match e.code() {
            Some(404) => anyhow!(crate::not_found(rt, ns, &name)),
            _ => e.into(),
        })?;
    println!("{} scaled", qualified(rt, &name));
    Ok(())
}

/// Where a kind keeps its pod spec.
fn pod_spec_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Pod" => Some("/spec"),
        "Deployment" | "ReplicaSet" | "DaemonSet" | "Job" => Some("/spec/template/spec"),
        "CronJob" => Some("/spec/jobTemplate/spec/template/spec"),
        _ => None,
    }
}

/// `spoke set image KIND/NAME CONTAINER=MODULE...` (`*=MODULE`: every
/// container).
pub async fn set_image(client: &Client, ns: &str, args: &[String]) -> anyhow::Result<()> {
    let (rt, name, pairs) = object_and_rest(args)?;
    let pointer =
        pod_spec_pointer(rt.kind).ok_or_else(|| anyhow!("{} have no containers", rt.plural))?;
    if pairs.is_empty() {
        return Err(anyhow!(
            "say which image: CONTAINER=MODULE (such as web=hello:v2)"
        ));
    }
    let mut changes = Vec::new();
    for p in pairs {
        let (c, image) = p
            .split_once('=')
            .filter(|(c, i)| !c.is_empty() && !i.is_empty())
            .ok_or_else(|| anyhow!("{p}: write CONTAINER=MODULE"))?;
        changes.push((c.to_string(), image.to_string()));
    }
    for _ in 0..5 {
        let mut obj = read(client, rt, ns, &name).await?;
        let containers = obj
            .pointer_mut(&format!("{pointer}/containers"))
            .and_then(Value::as_array_mut)
            .ok_or_else(|| anyhow!("{} has no containers", qualified(rt, &name)))?;
        for (c, image) in &changes {
            let mut found = false;
            for container in containers.iter_mut() {
                if c == "*" || container["name"].as_str() == Some(c) {
                    container["image"] = json!(image);
                    found = true;
                }
            }
            if !found {
                return Err(anyhow!("unable to find container named \"{c}\""));
            }
        }
        match client
            .replace(&rt.object_path(scoped(rt, ns), &name), &obj)
            .await
        {
            Ok(_) => {
                println!("{} image updated", qualified(rt, &name));
                return Ok(());
            }
            Err(e) if e.code() == Some(409) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(anyhow!("gave up after repeated conflicting writes"))
}

/// Which metadata map `label` and `annotate` change.
#[derive(Clone, Copy)]
pub enum Meta {
    Labels,
    Annotations,
}

/// `spoke label KIND/NAME k=v k2-` (and `annotate`): sets and removes keys;
/// changing an existing value needs `--overwrite`.
pub async fn metadata(
    client: &Client,
    ns: &str,
    args: &[String],
    which: Meta,
    overwrite: bool,
) -> anyhow::Result<()> {
    let (rt, name, pairs) = object_and_rest(args)?;
    let (field, verb) = match which {
        Meta::Labels => ("labels", "labeled"),
        Meta::Annotations => ("annotations", "annotated"),
    };
    if pairs.is_empty() {
        return Err(anyhow!(
            "say what to change: KEY=VALUE to set, KEY- to remove"
        ));
    }
    let obj = read(client, rt, ns, &name).await?;
    let current = obj["metadata"][field]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut patch = Map::new();
    for p in pairs {
        if let Some(key) = p.strip_suffix('-').filter(|k| !k.contains('=')) {
            patch.insert(key.to_string(), Value::Null);
            continue;
        }
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| anyhow!("{p}: write KEY=VALUE to set, KEY- to remove"))?;
        if let Some(old) = current.get(k).and_then(Value::as_str)
            && old != v
            && !overwrite
        {
            return Err(anyhow!(
                "'{k}' already has a value ({old}), and --overwrite is false"
            ));
        }
        patch.insert(k.to_string(), json!(v));
    }
    let mut body = json!({"metadata": {field: patch}});
    // Pinned to the version checked, so a concurrent change is not
    // overwritten without the check.
    body["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"].clone();
    client
        .patch(
            &rt.object_path(scoped(rt, ns), &name),
            "application/merge-patch+json",
            &body,
        )
        .await?;
    println!("{} {verb}", qualified(rt, &name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_kind_slash_name_or_two_words() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = args(&["deploy/web", "x=1"]);
        let (rt, name, rest) = object_and_rest(&a).unwrap();
        assert_eq!(
            (rt.kind, name.as_str(), rest.len()),
            ("Deployment", "web", 1)
        );
        let a = args(&["pod", "hello", "a=b", "c-"]);
        let (rt, name, rest) = object_and_rest(&a).unwrap();
        assert_eq!((rt.kind, name.as_str(), rest.len()), ("Pod", "hello", 2));
        assert!(object_and_rest(&args(&["pod"])).is_err());
        assert!(object_and_rest(&args(&["gadget/x"])).is_err());
    }
}
