//! `spoke describe KIND NAME`: an object in kubectl's readable layout, with
//! what it owns and its recent events (found with the `involvedObject`
//! field selectors). Pods, nodes and deployments have their own layouts;
//! other kinds show their metadata and the rest as YAML.

use std::fmt::Write as _;
use std::time::SystemTime;

use anyhow::anyhow;
use serde_json::Value;
use spoke_api::resource::ResourceType;
use spoke_api::table::{age, cell_text, columns, pod_status};
use spoke_client::Client;

use crate::get::{align, encode};

pub async fn run(client: &Client, ns: &str, args: &[String]) -> anyhow::Result<()> {
    let (rt, names): (&'static ResourceType, Vec<String>) = match args {
        [one] if one.contains('/') => {
            let (k, n) = one.split_once('/').expect("checked");
            (crate::lookup(k)?, vec![n.to_string()])
        }
        [kind] => {
            let rt = crate::lookup(kind)?;
            let list: Value = client
                .get(&rt.collection_path(rt.namespaced.then_some(ns)))
                .await?;
            let names = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str))
                .map(String::from)
                .collect();
            (rt, names)
        }
        [kind, names @ ..] => (crate::lookup(kind)?, names.to_vec()),
        [] => return Err(anyhow!("say what to describe: spoke describe KIND [NAME]")),
    };
    let ns = rt.namespaced.then_some(ns);
    let mut first = true;
    for name in names {
        let obj: Value =
            client
                .get(&rt.object_path(ns, &name))
                .await
                .map_err(|e| match e.code() {
                    Some(404) => anyhow!(crate::not_found(rt, ns, &name)),
                    _ => e.into(),
                })?;
        if !first {
            println!();
        }
        first = false;
        let text = describe(client, rt, &obj).await?;
        print!("{text}");
    }
    Ok(())
}

async fn describe(client: &Client, rt: &ResourceType, obj: &Value) -> anyhow::Result<String> {
    let now = SystemTime::now();
    let mut out = String::new();
    header(&mut out, obj);
    match rt.kind {
        "Pod" => pod(&mut out, obj, now),
        "Node" => node(client, &mut out, obj, now).await?,
        "Deployment" => deployment(client, &mut out, obj).await?,
        _ => {
            let mut rest = obj.clone();
            if let Some(m) = rest.as_object_mut() {
                for k in ["apiVersion", "kind", "metadata"] {
                    m.remove(k);
                }
            }
            if rest.as_object().is_some_and(|m| !m.is_empty()) {
                out.push_str(&serde_yaml::to_string(&rest)?);
            }
        }
    }
    events(client, &mut out, rt, obj, now).await?;
    Ok(out)
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

/// `key=value` pairs, one per line after the first, indented to `indent`.
fn pairs(map: &Value, sep: &str, indent: usize) -> String {
    let items: Vec<String> = map
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}{sep}{}", v.as_str().map_or(v.to_string(), String::from)))
        .collect();
    if items.is_empty() {
        return "<none>".into();
    }
    items.join(&format!("\n{}", " ".repeat(indent)))
}

/// Width of the label column of `Name:  value` lines.
const W: usize = 16;

fn field(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{:<W$}{value}", format!("{name}:"));
}

fn header(out: &mut String, obj: &Value) {
    field(out, "Name", str_at(obj, "/metadata/name"));
    if let Some(ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        field(out, "Namespace", ns);
    }
    field(out, "Labels", &pairs(&obj["metadata"]["labels"], "=", W));
    field(
        out,
        "Annotations",
        &pairs(&obj["metadata"]["annotations"], ": ", W),
    );
    field(out, "Created", str_at(obj, "/metadata/creationTimestamp"));
    if let Some(owner) = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|o| o.iter().find(|o| o["controller"] == true).or(o.first()))
    {
        field(
            out,
            "Controlled By",
            &format!("{}/{}", str_at(owner, "/kind"), str_at(owner, "/name")),
        );
    }
}

fn pod(out: &mut String, obj: &Value, now: SystemTime) {
    let p: spoke_api::Pod = serde_json::from_value(obj.clone()).unwrap_or_default();
    field(
        out,
        "Node",
        or_none(p.spec.node_name.as_deref().unwrap_or("")),
    );
    let status = p.status.clone().unwrap_or_default();
    field(
        out,
        "Start Time",
        or_none(status.start_time.as_deref().unwrap_or("")),
    );
    field(out, "Status", &pod_status(&p));
    if let Some(m) = status.message.as_deref() {
        field(out, "Message", m);
    }
    out.push_str("Containers:\n");
    for c in &p.spec.containers {
        let _ = writeln!(out, "  {}:", c.name);
        let _ = writeln!(out, "    Image:          {}", c.image);
        let st = status.container_statuses.iter().find(|s| s.name == c.name);
        if let Some(st) = st {
            if !st.image_id.is_empty() {
                let _ = writeln!(out, "    Image ID:       {}", st.image_id);
            }
            let state = serde_json::to_value(&st.state).unwrap_or_default();
            for (name, s) in state.as_object().into_iter().flatten() {
                let mut title = name.clone();
                title[..1].make_ascii_uppercase();
                let _ = writeln!(out, "    State:          {title}");
                for (k, v) in s.as_object().into_iter().flatten() {
                    let _ = writeln!(out, "      {:<14}{}", format!("{k}:"), cell_text(v));
                }
            }
            let _ = writeln!(
                out,
                "    Ready:          {}",
                if st.ready { "True" } else { "False" }
            );
            let _ = writeln!(out, "    Restart Count:  {}", st.restart_count);
        } else {
            let _ = writeln!(out, "    State:          Waiting");
        }
        if !c.resources.is_empty() {
            for (what, map) in [
                ("Limits", &c.resources.limits),
                ("Requests", &c.resources.requests),
            ] {
                if !map.is_empty() {
                    let _ = writeln!(out, "    {what}:");
                    for (k, q) in map {
                        let _ = writeln!(
                            out,
                            "      {k}:  {}",
                            serde_json::to_value(q)
                                .map(|v| cell_text(&v))
                                .unwrap_or_default()
                        );
                    }
                }
            }
        }
        if c.env.is_empty() {
            let _ = writeln!(out, "    Environment:    <none>");
        } else {
            let _ = writeln!(out, "    Environment:");
            for e in &c.env {
                let value = match &e.value_from {
                    Some(from) => match (&from.config_map_key_ref, &from.secret_key_ref) {
                        (Some(r), _) => {
                            format!("<set to the key '{}' of config map '{}'>", r.key, r.name)
                        }
                        (_, Some(r)) => {
                            format!("<set to the key '{}' in secret '{}'>", r.key, r.name)
                        }
                        _ => String::new(),
                    },
                    None => e.value.clone(),
                };
                let _ = writeln!(out, "      {}:  {value}", e.name);
            }
        }
    }
    if !status.conditions.is_empty() {
        out.push_str("Conditions:\n");
        let mut rows = vec![vec!["  Type".to_string(), "Status".to_string()]];
        for c in &status.conditions {
            rows.push(vec![format!("  {}", c.type_), c.status.clone()]);
        }
        out.push_str(&align(&rows));
    }
    let _ = now;
}

async fn node(
    client: &Client,
    out: &mut String,
    obj: &Value,
    now: SystemTime,
) -> anyhow::Result<()> {
    let cols = columns("Node");
    let cell = |name: &str| {
        cols.iter()
            .find(|c| c.name == name)
            .map(|c| cell_text(&c.cell(obj, now)))
            .unwrap_or_default()
    };
    field(out, "Roles", &cell("Roles"));
    field(out, "Status", &cell("Status"));
    let taints: Vec<String> = obj
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|t| {
            let v = str_at(t, "/value");
            let kv = if v.is_empty() {
                str_at(t, "/key").to_string()
            } else {
                format!("{}={v}", str_at(t, "/key"))
            };
            format!("{kv}:{}", str_at(t, "/effect"))
        })
        .collect();
    field(
        out,
        "Taints",
        or_none(&taints.join(&format!("\n{}", " ".repeat(W)))),
    );
    field(
        out,
        "Unschedulable",
        if obj.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
            "true"
        } else {
            "false"
        },
    );
    if let Some(conds) = obj.pointer("/status/conditions").and_then(Value::as_array) {
        out.push_str("Conditions:\n");
        let mut rows = vec![
            ["  Type", "Status", "LastHeartbeatTime", "Reason", "Message"]
                .map(String::from)
                .to_vec(),
        ];
        for c in conds {
            rows.push(vec![
                format!("  {}", str_at(c, "/type")),
                str_at(c, "/status").into(),
                or_none(str_at(c, "/lastHeartbeatTime")).into(),
                or_none(str_at(c, "/reason")).into(),
                or_none(str_at(c, "/message")).into(),
            ]);
        }
        out.push_str(&align(&rows));
    }
    for (title, p) in [
        ("Capacity", "/status/capacity"),
        ("Allocatable", "/status/allocatable"),
    ] {
        if let Some(m) = obj.pointer(p).and_then(Value::as_object) {
            let _ = writeln!(out, "{title}:");
            for (k, v) in m {
                let _ = writeln!(out, "  {k}:  {}", cell_text(v));
            }
        }
    }
    if let Some(info) = obj.pointer("/status/nodeInfo").and_then(Value::as_object) {
        out.push_str("System Info:\n");
        for (k, v) in info.iter().filter(|(_, v)| v.as_str() != Some("")) {
            let _ = writeln!(out, "  {:<18}{}", format!("{k}:"), cell_text(v));
        }
    }
    let name = str_at(obj, "/metadata/name");
    let pods: Value = client
        .get(&format!(
            "/api/v1/pods?fieldSelector={}",
            encode(&format!("spec.nodeName={name}"))
        ))
        .await?;
    let items = pods["items"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(out, "{:<W$}({} in total)", "Pods:", items.len());
    if !items.is_empty() {
        let mut rows = vec![
            ["  Namespace", "Name", "Status", "Age"]
                .map(String::from)
                .to_vec(),
        ];
        for p in &items {
            let pod: spoke_api::Pod = serde_json::from_value(p.clone()).unwrap_or_default();
            rows.push(vec![
                format!("  {}", str_at(p, "/metadata/namespace")),
                str_at(p, "/metadata/name").into(),
                pod_status(&pod),
                age(
                    p.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str),
                    now,
                ),
            ]);
        }
        out.push_str(&align(&rows));
    }
    Ok(())
}

async fn deployment(client: &Client, out: &mut String, d: &Value) -> anyhow::Result<()> {
    let int = |p: &str| d.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    let want = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let sel = d
        .pointer("/spec/selector")
        .and_then(|s| serde_json::from_value::<spoke_api::selector::LabelSelector>(s.clone()).ok())
        .and_then(|s| s.to_selector().ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    field(out, "Selector", or_none(&sel));
    field(
        out,
        "Replicas",
        &format!(
            "{want} desired | {} updated | {} total | {} available | {} unavailable",
            int("/status/updatedReplicas"),
            int("/status/replicas"),
            int("/status/availableReplicas"),
            int("/status/unavailableReplicas"),
        ),
    );
    field(
        out,
        "StrategyType",
        or_none(str_at(d, "/spec/strategy/type")),
    );
    if d.pointer("/spec/paused") == Some(&Value::Bool(true)) {
        field(out, "Paused", "true");
    }
    out.push_str("Pod Template:\n");
    let _ = writeln!(
        out,
        "  Labels:  {}",
        pairs(&d["spec"]["template"]["metadata"]["labels"], "=", 11)
    );
    out.push_str("  Containers:\n");
    for c in d
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let _ = writeln!(out, "   {}:", str_at(c, "/name"));
        let _ = writeln!(out, "    Image:  {}", str_at(c, "/image"));
    }
    if let Some(conds) = d.pointer("/status/conditions").and_then(Value::as_array) {
        out.push_str("Conditions:\n");
        let mut rows = vec![["  Type", "Status", "Reason"].map(String::from).to_vec()];
        for c in conds {
            rows.push(vec![
                format!("  {}", str_at(c, "/type")),
                str_at(c, "/status").into(),
                or_none(str_at(c, "/reason")).into(),
            ]);
        }
        out.push_str(&align(&rows));
    }
    // The ReplicaSets it owns: the newest is the one at its revision.
    let ns = str_at(d, "/metadata/namespace");
    let uid = str_at(d, "/metadata/uid");
    let revision = str_at(
        d,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    );
    let list: Value = client
        .get(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"))
        .await?;
    let owned: Vec<&Value> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| {
            r.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|o| o.iter().any(|o| o["uid"] == uid))
        })
        .collect();
    let describe_rs = |r: &&Value| {
        format!(
            "{} ({}/{} replicas created)",
            str_at(r, "/metadata/name"),
            r.pointer("/status/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            r.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
        )
    };
    let (new, old): (Vec<&Value>, Vec<&Value>) = owned.into_iter().partition(|r| {
        str_at(
            r,
            "/metadata/annotations/deployment.kubernetes.io~1revision",
        ) == revision
    });
    let old: Vec<String> = old
        .iter()
        .filter(|r| {
            r.pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0
        })
        .map(describe_rs)
        .collect();
    field(out, "OldReplicaSets", or_none(&old.join(", ")));
    field(
        out,
        "NewReplicaSet",
        or_none(&new.iter().map(describe_rs).collect::<Vec<_>>().join(", ")),
    );
    Ok(())
}

/// The object's events, oldest first, as kubectl lists them under
/// `Events:`.
async fn events(
    client: &Client,
    out: &mut String,
    rt: &ResourceType,
    obj: &Value,
    now: SystemTime,
) -> anyhow::Result<()> {
    let name = str_at(obj, "/metadata/name");
    let selector = format!("involvedObject.name={name},involvedObject.kind={}", rt.kind);
    let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str);
    let events = ResourceType::lookup("events").expect("known kind");
    let path = format!(
        "{}?fieldSelector={}",
        events.collection_path(ns),
        encode(&selector)
    );
    let list: Value = client.get(&path).await?;
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    // Events of an object that had the same name before are not its own.
    let uid = str_at(obj, "/metadata/uid");
    items.retain(|e| {
        let u = str_at(e, "/involvedObject/uid");
        u.is_empty() || u == uid
    });
    let when = |e: &Value| {
        [
            "/lastTimestamp",
            "/eventTime",
            "/metadata/creationTimestamp",
        ]
        .iter()
        .find_map(|p| e.pointer(p).and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
    };
    items.sort_by_key(when);
    if items.is_empty() {
        let _ = writeln!(out, "{:<W$}<none>", "Events:");
        return Ok(());
    }
    out.push_str("Events:\n");
    let mut rows = vec![
        ["  Type", "Reason", "Age", "From", "Message"]
            .map(String::from)
            .to_vec(),
        ["  ----", "------", "----", "----", "-------"]
            .map(String::from)
            .to_vec(),
    ];
    for e in items.iter().rev().take(20).rev() {
        let count = e.pointer("/count").and_then(Value::as_i64).unwrap_or(1);
        let last = age(Some(&when(e)), now);
        let age_text = if count > 1 {
            let first = age(e.pointer("/firstTimestamp").and_then(Value::as_str), now);
            format!("{last} (x{count} over {first})")
        } else {
            last
        };
        rows.push(vec![
            format!("  {}", str_at(e, "/type")),
            str_at(e, "/reason").into(),
            age_text,
            str_at(e, "/source/component").into(),
            str_at(e, "/message").into(),
        ]);
    }
    out.push_str(&align(&rows));
    Ok(())
}
