//! `spoke get`: objects as kubectl prints them (aligned columns, human
//! ages), or as YAML, JSON or names.

use std::time::SystemTime;

use anyhow::anyhow;
use serde_json::Value;
use spoke_api::core::{Node, Pod};
use spoke_api::resource::ResourceType;
use spoke_client::Client;

pub async fn get(
    client: &Client,
    rt: &'static ResourceType,
    ns: Option<&str>,
    names: &[String],
    output: Option<&str>,
    selector: Option<&str>,
) -> anyhow::Result<()> {
    let items: Vec<Value> = if names.is_empty() {
        let mut path = rt.collection_path(ns);
        if let Some(sel) = selector {
            path.push_str(&format!("?labelSelector={}", encode(sel)));
        }
        let list: Value = client.get(&path).await?;
        list["items"].as_array().cloned().unwrap_or_default()
    } else {
        let mut items = Vec::new();
        for name in names {
            match client.get(&rt.object_path(ns, name)).await {
                Ok(v) => items.push(v),
                Err(e) if e.code() == Some(404) => {
                    return Err(anyhow!(match ns.filter(|_| rt.namespaced) {
                        Some(ns) =>
                            format!("{} \"{name}\" not found in namespace \"{ns}\"", rt.plural),
                        None => format!("{} \"{name}\" not found", rt.plural),
                    }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        items
    };
    // One object is printed as itself, several as a List, as kubectl does.
    let document = |items: Vec<Value>| {
        if names.len() == 1 {
            items.into_iter().next().unwrap_or(Value::Null)
        } else {
            as_list(items)
        }
    };
    match output {
        Some("json") => println!("{}", serde_json::to_string_pretty(&document(items))?),
        Some("yaml") => print!("{}", serde_yaml::to_string(&document(items))?),
        Some("name") => {
            for i in &items {
                println!(
                    "{}/{}",
                    rt.singular,
                    i["metadata"]["name"].as_str().unwrap_or("")
                );
            }
        }
        None | Some("wide") => {
            let wide = output == Some("wide");
            if items.is_empty() {
                match ns.filter(|_| rt.namespaced) {
                    Some(ns) => eprintln!("No resources found in {ns} namespace."),
                    None => eprintln!("No resources found"),
                }
                return Ok(());
            }
            let all_ns = rt.namespaced && ns.is_none();
            print!("{}", table(rt, &items, wide, all_ns));
        }
        Some(other) => {
            return Err(anyhow!(
                "unable to match a printer for output format \"{other}\": use wide, yaml, json or name"
            ));
        }
    }
    Ok(())
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn as_list(items: Vec<Value>) -> Value {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items})
}

/// Kubernetes' short ages: 45s, 3m, 5h, 2d.
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    let Some(t) = created.and_then(|c| humantime::parse_rfc3339(c).ok()) else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 * 3 => format!("{}m", s / 60),
        s if s < 86400 * 2 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// What kubectl shows in a pod's STATUS column.
pub fn pod_status(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    for c in &status.container_statuses {
        if let Some(w) = &c.state.waiting
            && !w.reason.is_empty()
        {
            return w.reason.clone();
        }
        if let Some(t) = &c.state.terminated
            && !t.reason.is_empty()
            && status.phase.as_deref() != Some("Running")
        {
            return t.reason.clone();
        }
    }
    status.phase.unwrap_or_else(|| "Pending".into())
}

fn table(rt: &ResourceType, items: &[Value], wide: bool, all_ns: bool) -> String {
    let now = SystemTime::now();
    let mut rows: Vec<Vec<String>> = Vec::new();
    match rt.kind {
        "Pod" => {
            let mut head = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
            if wide {
                head.extend(["NODE", "IMAGE"]);
            }
            rows.push(head.into_iter().map(String::from).collect());
            for item in items {
                let pod: Pod = serde_json::from_value(item.clone()).unwrap_or_default();
                let statuses = pod
                    .status
                    .as_ref()
                    .map(|s| s.container_statuses.clone())
                    .unwrap_or_default();
                let ready = statuses.iter().filter(|c| c.ready).count();
                let restarts: i32 = statuses.iter().map(|c| c.restart_count).sum();
                let mut row = vec![
                    pod.metadata.name.clone(),
                    format!("{ready}/{}", pod.spec.containers.len()),
                    pod_status(&pod),
                    restarts.to_string(),
                    age(pod.metadata.creation_timestamp.as_deref(), now),
                ];
                if wide {
                    row.push(
                        pod.spec
                            .node_name
                            .clone()
                            .unwrap_or_else(|| "<none>".into()),
                    );
                    row.push(
                        pod.spec
                            .containers
                            .iter()
                            .map(|c| c.image.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                    );
                }
                rows.push(row);
            }
        }
        "Node" => {
            let mut head = vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"];
            if wide {
                head.extend(["ARCH", "OS"]);
            }
            rows.push(head.into_iter().map(String::from).collect());
            for item in items {
                let node: Node = serde_json::from_value(item.clone()).unwrap_or_default();
                let mut status = match node.ready_status() {
                    "True" => "Ready".to_string(),
                    _ => "NotReady".to_string(),
                };
                if node.spec.unschedulable {
                    status.push_str(",SchedulingDisabled");
                }
                let info = node
                    .status
                    .as_ref()
                    .and_then(|s| s.node_info.clone())
                    .unwrap_or_default();
                let mut row = vec![
                    node.metadata.name.clone(),
                    status,
                    "<none>".into(),
                    age(node.metadata.creation_timestamp.as_deref(), now),
                    info.kubelet_version.clone(),
                ];
                if wide {
                    row.push(info.architecture.clone());
                    row.push(info.operating_system.clone());
                }
                rows.push(row);
            }
        }
        kind => {
            let cols = columns(kind);
            let mut head = vec!["NAME".to_string()];
            head.extend(cols.iter().map(|(h, _)| h.to_string()));
            head.push("AGE".into());
            rows.push(head);
            for item in items {
                let mut row = vec![item["metadata"]["name"].as_str().unwrap_or("").to_string()];
                row.extend(cols.iter().map(|(_, f)| f(item)));
                row.push(age(item["metadata"]["creationTimestamp"].as_str(), now));
                rows.push(row);
            }
        }
    }
    if all_ns {
        for (i, (row, item)) in rows
            .iter_mut()
            .zip(std::iter::once(&Value::Null).chain(items))
            .enumerate()
        {
            let ns = if i == 0 {
                "NAMESPACE".to_string()
            } else {
                item["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            };
            row.insert(0, ns);
        }
    }
    align(&rows)
}

type Column = (&'static str, fn(&Value) -> String);

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn count(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
        .to_string()
}

/// The columns kubectl shows for a kind, between NAME and AGE.
fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Deployment" => vec![
            ("READY", |v| {
                format!(
                    "{}/{}",
                    int(v, "/status/readyReplicas"),
                    int(v, "/spec/replicas")
                )
            }),
            ("UP-TO-DATE", |v| {
                int(v, "/status/updatedReplicas").to_string()
            }),
            ("AVAILABLE", |v| {
                int(v, "/status/availableReplicas").to_string()
            }),
        ],
        "ReplicaSet" => vec![
            ("DESIRED", |v| int(v, "/spec/replicas").to_string()),
            ("CURRENT", |v| int(v, "/status/replicas").to_string()),
            ("READY", |v| int(v, "/status/readyReplicas").to_string()),
        ],
        "DaemonSet" => vec![
            ("DESIRED", |v| {
                int(v, "/status/desiredNumberScheduled").to_string()
            }),
            ("CURRENT", |v| {
                int(v, "/status/currentNumberScheduled").to_string()
            }),
            ("READY", |v| int(v, "/status/numberReady").to_string()),
            ("UP-TO-DATE", |v| {
                int(v, "/status/updatedNumberScheduled").to_string()
            }),
            ("AVAILABLE", |v| {
                int(v, "/status/numberAvailable").to_string()
            }),
        ],
        "Job" => vec![("COMPLETIONS", |v| {
            format!(
                "{}/{}",
                int(v, "/status/succeeded"),
                int(v, "/spec/completions")
            )
        })],
        "CronJob" => vec![
            ("SCHEDULE", |v| {
                v["spec"]["schedule"].as_str().unwrap_or("").into()
            }),
            ("SUSPEND", |v| {
                if v["spec"]["suspend"].as_bool().unwrap_or(false) {
                    "True".into()
                } else {
                    "False".into()
                }
            }),
            ("ACTIVE", |v| {
                v.pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
                    .to_string()
            }),
        ],
        "ConfigMap" => vec![("DATA", |v| {
            (count(v, "/data").parse::<usize>().unwrap_or(0)
                + count(v, "/binaryData").parse::<usize>().unwrap_or(0))
            .to_string()
        })],
        "Secret" => vec![
            ("TYPE", |v| v["type"].as_str().unwrap_or("Opaque").into()),
            ("DATA", |v| count(v, "/data")),
        ],
        "Event" => vec![
            ("TYPE", |v| v["type"].as_str().unwrap_or("").into()),
            ("REASON", |v| v["reason"].as_str().unwrap_or("").into()),
            ("OBJECT", |v| {
                format!(
                    "{}/{}",
                    v["involvedObject"]["kind"]
                        .as_str()
                        .unwrap_or("")
                        .to_lowercase(),
                    v["involvedObject"]["name"].as_str().unwrap_or("")
                )
            }),
            ("MESSAGE", |v| v["message"].as_str().unwrap_or("").into()),
        ],
        "Namespace" => vec![("STATUS", |v| {
            v["status"]["phase"].as_str().unwrap_or("").into()
        })],
        _ => vec![],
    }
}

/// Columns separated by at least three spaces, as kubectl prints them.
pub(crate) fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        let at = |s: u64| age(Some("2026-01-01T00:00:00Z"), t0 + Duration::from_secs(s));
        assert_eq!(at(5), "5s");
        assert_eq!(at(600), "10m");
        assert_eq!(at(5 * 3600), "5h");
        assert_eq!(at(3 * 86400), "3d");
        assert_eq!(age(None, t0), "<unknown>");
    }

    #[test]
    fn columns_are_aligned() {
        let rows = vec![
            vec!["NAME".to_string(), "STATUS".to_string()],
            vec!["hello-world".to_string(), "Running".to_string()],
        ];
        assert_eq!(
            align(&rows),
            "NAME          STATUS\nhello-world   Running\n"
        );
    }

    #[test]
    fn pod_status_prefers_waiting_reasons() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "a"}, "spec": {"containers": [{"name": "a", "image": "a:1"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ErrImagePull"}}}]}
        })).unwrap();
        assert_eq!(pod_status(&pod), "ErrImagePull");
    }
}
