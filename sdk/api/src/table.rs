//! The columns `kubectl get` and `spoke get` print for each kind, computed
//! from an object.
//!
//! One definition serves both printers: the hub answers `as=Table` requests
//! (what kubectl sends) with a `meta.k8s.io/v1` `Table` built from these
//! columns, and the `spoke` CLI prints the same columns from the objects it
//! lists, so the two tools show the same thing. Column names and cell
//! formats follow Kubernetes' own printers; columns of priority 1 are the
//! extra ones `-o wide` shows.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::core::{Node, Pod};
use crate::selector::LabelSelector;

/// One column: its definition (as a `TableColumnDefinition`) and how to
/// compute its cell.
#[derive(Clone, Copy)]
pub struct Column {
    /// Title Case, as the API sends it (`Up-to-date`); printers upper-case it.
    pub name: &'static str,
    /// `string`, `integer` or `date`.
    pub type_: &'static str,
    /// `name` for the object's name column, else empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0: always shown; 1: shown with `-o wide`.
    pub priority: u8,
    cell: fn(&Value, SystemTime) -> Value,
}

impl Column {
    /// The `TableColumnDefinition` of this column.
    pub fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }

    /// This column's cell for `object`, ages counted up to `now`.
    pub fn cell(&self, object: &Value, now: SystemTime) -> Value {
        (self.cell)(object, now)
    }
}

const fn col(
    name: &'static str,
    type_: &'static str,
    priority: u8,
    description: &'static str,
    cell: fn(&Value, SystemTime) -> Value,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority,
        cell,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: "Name must be unique within a namespace.",
    priority: 0,
    cell: |v, _| json!(str_at(v, "/metadata/name")),
};

const AGE: Column = col(
    "Age",
    "string",
    0,
    "Time since the object was created.",
    |v, now| {
        json!(age(
            v.pointer("/metadata/creationTimestamp")
                .and_then(Value::as_str),
            now
        ))
    },
);

const CONTAINERS: Column = col(
    "Containers",
    "string",
    1,
    "Names of the containers of the pod template.",
    |v, _| json!(template_containers(v, "name")),
);

const IMAGES: Column = col(
    "Images",
    "string",
    1,
    "Wasm modules of the containers of the pod template.",
    |v, _| json!(template_containers(v, "image")),
);

const SELECTOR: Column = col(
    "Selector",
    "string",
    1,
    "The label selector of the pods this object manages.",
    |v, _| json!(selector(v)),
);

/// The columns of `kind`, in printing order, wide ones included.
pub fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            NAME,
            col(
                "Ready",
                "string",
                0,
                "Ready containers out of all containers.",
                |v, _| {
                    let pod = pod(v);
                    let statuses = pod.status.map(|s| s.container_statuses);
                    let ready = statuses.iter().flatten().filter(|c| c.ready).count();
                    json!(format!("{ready}/{}", pod.spec.containers.len()))
                },
            ),
            col(
                "Status",
                "string",
                0,
                "The pod's phase, or why it is not running.",
                |v, _| json!(pod_status(&pod(v))),
            ),
            col(
                "Restarts",
                "integer",
                0,
                "Restarts of the pod's containers.",
                |v, _| {
                    let pod = pod(v);
                    let statuses = pod.status.map(|s| s.container_statuses);
                    json!(
                        statuses
                            .iter()
                            .flatten()
                            .map(|c| c.restart_count)
                            .sum::<i32>()
                    )
                },
            ),
            AGE,
            col("Node", "string", 1, "The node the pod runs on.", |v, _| {
                json!(or_none(str_at(v, "/spec/nodeName")))
            }),
            col(
                "Image",
                "string",
                1,
                "Wasm modules of the pod's containers.",
                |v, _| json!(containers(v.pointer("/spec/containers"), "image")),
            ),
        ],
        "Node" => vec![
            NAME,
            col(
                "Status",
                "string",
                0,
                "Ready, NotReady or Unknown; SchedulingDisabled when cordoned.",
                |v, _| {
                    let node: Node = serde_json::from_value(v.clone()).unwrap_or_default();
                    let mut status = match node.ready_status() {
                        "True" => "Ready".to_string(),
                        "False" => "NotReady".to_string(),
                        _ => "Unknown".to_string(),
                    };
                    if node.spec.unschedulable {
                        status.push_str(",SchedulingDisabled");
                    }
                    json!(status)
                },
            ),
            col(
                "Roles",
                "string",
                0,
                "From the node-role.kubernetes.io/ labels.",
                |v, _| {
                    let roles: Vec<&str> = v
                        .pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect();
                    json!(if roles.is_empty() {
                        "<none>".to_string()
                    } else {
                        roles.join(",")
                    })
                },
            ),
            AGE,
            col("Version", "string", 0, "The agent's version.", |v, _| {
                json!(str_at(v, "/status/nodeInfo/kubeletVersion"))
            }),
            col(
                "Arch",
                "string",
                1,
                "CPU architecture of the board.",
                |v, _| json!(or_none(str_at(v, "/status/nodeInfo/architecture"))),
            ),
            col(
                "OS",
                "string",
                1,
                "Operating system of the board.",
                |v, _| json!(or_none(str_at(v, "/status/nodeInfo/operatingSystem"))),
            ),
        ],
        "Deployment" => vec![
            NAME,
            col(
                "Ready",
                "string",
                0,
                "Ready replicas out of desired replicas.",
                |v, _| {
                    json!(format!(
                        "{}/{}",
                        int(v, "/status/readyReplicas"),
                        replicas(v)
                    ))
                },
            ),
            col(
                "Up-to-date",
                "integer",
                0,
                "Replicas running the current template.",
                |v, _| json!(int(v, "/status/updatedReplicas")),
            ),
            col(
                "Available",
                "integer",
                0,
                "Replicas available to users.",
                |v, _| json!(int(v, "/status/availableReplicas")),
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "ReplicaSet" => vec![
            NAME,
            col("Desired", "integer", 0, "Desired replicas.", |v, _| {
                json!(replicas(v))
            }),
            col("Current", "integer", 0, "Replicas that exist.", |v, _| {
                json!(int(v, "/status/replicas"))
            }),
            col("Ready", "integer", 0, "Ready replicas.", |v, _| {
                json!(int(v, "/status/readyReplicas"))
            }),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "DaemonSet" => vec![
            NAME,
            col(
                "Desired",
                "integer",
                0,
                "Nodes that should run the pod.",
                |v, _| json!(int(v, "/status/desiredNumberScheduled")),
            ),
            col("Current", "integer", 0, "Nodes running the pod.", |v, _| {
                json!(int(v, "/status/currentNumberScheduled"))
            }),
            col(
                "Ready",
                "integer",
                0,
                "Nodes with the pod ready.",
                |v, _| json!(int(v, "/status/numberReady")),
            ),
            col(
                "Up-to-date",
                "integer",
                0,
                "Nodes running the current template.",
                |v, _| json!(int(v, "/status/updatedNumberScheduled")),
            ),
            col(
                "Available",
                "integer",
                0,
                "Nodes with the pod available.",
                |v, _| json!(int(v, "/status/numberAvailable")),
            ),
            col(
                "Node Selector",
                "string",
                0,
                "The template's node selector.",
                |v, _| {
                    let sel = v
                        .pointer("/spec/template/spec/nodeSelector")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    json!(or_none(&sel))
                },
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "Job" => vec![
            NAME,
            col(
                "Completions",
                "string",
                0,
                "Succeeded pods out of the completions wanted.",
                |v, _| {
                    let want = v
                        .pointer("/spec/completions")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    json!(format!("{}/{want}", int(v, "/status/succeeded")))
                },
            ),
            col(
                "Duration",
                "string",
                0,
                "How long the job ran (or has been running).",
                |v, now| {
                    let start = time_at(v, "/status/startTime");
                    let end = time_at(v, "/status/completionTime").unwrap_or(now);
                    json!(match start {
                        Some(s) => human_duration(end.duration_since(s).unwrap_or_default()),
                        None => String::new(),
                    })
                },
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "CronJob" => vec![
            NAME,
            col("Schedule", "string", 0, "When jobs are started.", |v, _| {
                json!(str_at(v, "/spec/schedule"))
            }),
            col(
                "Suspend",
                "boolean",
                0,
                "Whether new jobs are held back.",
                |v, _| {
                    let s = v.pointer("/spec/suspend").and_then(Value::as_bool);
                    json!(if s.unwrap_or(false) { "True" } else { "False" })
                },
            ),
            col("Active", "integer", 0, "Jobs running now.", |v, _| {
                json!(
                    v.pointer("/status/active")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len)
                )
            }),
            col(
                "Last Schedule",
                "string",
                0,
                "Time since a job was last started.",
                |v, now| {
                    json!(match v
                        .pointer("/status/lastScheduleTime")
                        .and_then(Value::as_str)
                    {
                        Some(t) => age(Some(t), now),
                        None => "<none>".into(),
                    })
                },
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            SELECTOR,
        ],
        "ConfigMap" => vec![
            NAME,
            col("Data", "integer", 0, "Number of keys.", |v, _| {
                json!(keys(v, "/data") + keys(v, "/binaryData"))
            }),
            AGE,
        ],
        "Secret" => vec![
            NAME,
            col("Type", "string", 0, "The secret's type.", |v, _| {
                json!(v["type"].as_str().unwrap_or("Opaque"))
            }),
            col("Data", "integer", 0, "Number of keys.", |v, _| {
                json!(keys(v, "/data") + keys(v, "/stringData"))
            }),
            AGE,
        ],
        "Namespace" => vec![
            NAME,
            col(
                "Status",
                "string",
                0,
                "Active, or Terminating while being deleted.",
                |v, _| json!(str_at(v, "/status/phase")),
            ),
            AGE,
        ],
        // Kubernetes' event columns: there is no name column in front.
        "Event" => vec![
            col(
                "Last Seen",
                "string",
                0,
                "Time since the event last happened.",
                |v, now| {
                    let last = [
                        "/lastTimestamp",
                        "/eventTime",
                        "/metadata/creationTimestamp",
                    ]
                    .iter()
                    .find_map(|p| v.pointer(p).and_then(Value::as_str));
                    json!(age(last, now))
                },
            ),
            col("Type", "string", 0, "Normal or Warning.", |v, _| {
                json!(str_at(v, "/type"))
            }),
            col("Reason", "string", 0, "Why it happened.", |v, _| {
                json!(str_at(v, "/reason"))
            }),
            col("Object", "string", 0, "What it happened to.", |v, _| {
                json!(format!(
                    "{}/{}",
                    str_at(v, "/involvedObject/kind").to_lowercase(),
                    str_at(v, "/involvedObject/name")
                ))
            }),
            col("Source", "string", 1, "Who reported it.", |v, _| {
                let parts: Vec<&str> = ["/source/component", "/source/host"]
                    .iter()
                    .map(|p| str_at(v, p))
                    .filter(|s| !s.is_empty())
                    .collect();
                json!(parts.join(", "))
            }),
            col("Message", "string", 0, "What happened.", |v, _| {
                json!(str_at(v, "/message"))
            }),
            col(
                "First Seen",
                "string",
                1,
                "Time since the event first happened.",
                |v, now| {
                    let first = ["/firstTimestamp", "/metadata/creationTimestamp"]
                        .iter()
                        .find_map(|p| v.pointer(p).and_then(Value::as_str));
                    json!(age(first, now))
                },
            ),
            col("Count", "integer", 1, "How often it happened.", |v, _| {
                json!(v.pointer("/count").and_then(Value::as_i64).unwrap_or(1))
            }),
            col("Name", "string", 1, "The event's name.", |v, _| {
                json!(str_at(v, "/metadata/name"))
            }),
        ],
        _ => vec![NAME, AGE],
    }
}

/// What a Table row carries besides its cells (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// A `PartialObjectMetadata` (Kubernetes' default; kubectl reads the
    /// namespace and labels from it).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses `?includeObject=`; `None` for an unknown value.
    pub fn parse(s: &str) -> Option<IncludeObject> {
        match s {
            "None" => Some(IncludeObject::None),
            "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// A `meta.k8s.io` `Table` (`api_version` is `meta.k8s.io/v1` or
/// `meta.k8s.io/v1beta1`) of `items` of `kind`. `metadata` is the list's
/// (resourceVersion, continue).
pub fn table(
    api_version: &str,
    kind: &str,
    items: &[Value],
    metadata: Value,
    include: IncludeObject,
    now: SystemTime,
) -> Value {
    let columns = columns(kind);
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let cells: Vec<Value> = columns.iter().map(|c| c.cell(item, now)).collect();
            let mut row = json!({"cells": cells});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": api_version,
                        "metadata": item.get("metadata").cloned().unwrap_or(json!({})),
                    });
                }
                IncludeObject::Object => row["object"] = item.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": metadata,
        "columnDefinitions": columns.iter().map(Column::definition).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// A cell as a printer shows it: strings as they are, other values as JSON.
pub fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// What kubectl shows in a pod's STATUS column.
pub fn pod_status(pod: &Pod) -> String {
    if pod.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    let status = pod.status.clone().unwrap_or_default();
    if let Some(reason) = status.reason.as_deref().filter(|r| !r.is_empty()) {
        return reason.to_string();
    }
    for c in &status.container_statuses {
        if let Some(w) = &c.state.waiting
            && !w.reason.is_empty()
        {
            return w.reason.clone();
        }
        if let Some(t) = &c.state.terminated
            && status.phase.as_deref() != Some("Running")
        {
            if !t.reason.is_empty() {
                return t.reason.clone();
            }
            return format!("ExitCode:{}", t.exit_code);
        }
    }
    status.phase.unwrap_or_else(|| "Pending".into())
}

/// Kubernetes' short ages (`45s`, `3m20s`, `10m`, `5h`, `2d3h`, `20d`,
/// `2y10d`), counted from an RFC 3339 time to `now`.
pub fn age(created: Option<&str>, now: SystemTime) -> String {
    match created.and_then(|c| humantime::parse_rfc3339_weak(c).ok()) {
        Some(t) => human_duration(now.duration_since(t).unwrap_or_default()),
        None => "<unknown>".into(),
    }
}

/// A duration as Kubernetes' printers write it: two units at most, the
/// second only while it still says something.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h) = (s / 60, s / 3600);
    let (days, years) = (h / 24, h / (24 * 365));
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        }
    } else if m < 180 {
        format!("{m}m")
    } else if h < 8 {
        match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        match h % 24 {
            0 => format!("{days}d"),
            r => format!("{days}d{r}h"),
        }
    } else if h < 24 * 365 * 2 {
        format!("{days}d")
    } else if h < 24 * 365 * 8 {
        match days % 365 {
            0 => format!("{years}y"),
            r => format!("{years}y{r}d"),
        }
    } else {
        format!("{years}y")
    }
}

fn pod(v: &Value) -> Pod {
    serde_json::from_value(v.clone()).unwrap_or_default()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// `spec.replicas`, which defaults to 1 as in Kubernetes.
fn replicas(v: &Value) -> i64 {
    v.pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn keys(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer)
        .and_then(Value::as_object)
        .map_or(0, |m| m.len())
}

fn time_at(v: &Value, pointer: &str) -> Option<SystemTime> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// One field of each container, comma-separated.
fn containers(list: Option<&Value>, field: &str) -> String {
    let parts: Vec<&str> = list
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get(field).and_then(Value::as_str))
        .collect();
    or_none(&parts.join(","))
}

/// Containers of a workload's pod template (a CronJob's is one level deeper).
fn template_containers(v: &Value, field: &str) -> String {
    let list = v
        .pointer("/spec/template/spec/containers")
        .or_else(|| v.pointer("/spec/jobTemplate/spec/template/spec/containers"));
    containers(list, field)
}

fn selector(v: &Value) -> String {
    let sel = v
        .pointer("/spec/selector")
        .or_else(|| v.pointer("/spec/jobTemplate/spec/selector"))
        .and_then(|s| serde_json::from_value::<LabelSelector>(s.clone()).ok())
        .and_then(|s| s.to_selector().ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    or_none(&sel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> String {
        human_duration(Duration::from_secs(s))
    }

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(at(5), "5s");
        assert_eq!(at(119), "119s");
        assert_eq!(at(200), "3m20s");
        assert_eq!(at(600), "10m");
        assert_eq!(at(5 * 3600), "5h");
        assert_eq!(at(5 * 3600 + 120), "5h2m");
        assert_eq!(at(20 * 3600), "20h");
        assert_eq!(at(3 * 86400), "3d");
        assert_eq!(at(3 * 86400 + 7200), "3d2h");
        assert_eq!(at(30 * 86400), "30d");
        assert_eq!(at(3 * 365 * 86400 + 86400), "3y1d");
        let t0 = humantime::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        assert_eq!(
            age(Some("2026-01-01T00:00:00Z"), t0 + Duration::from_secs(42)),
            "42s"
        );
        assert_eq!(age(None, t0), "<unknown>");
    }

    #[test]
    fn pod_rows_have_kubectls_columns_and_values() {
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "pi-1", "containers": [{"name": "a", "image": "web:v1"}, {"name": "b", "image": "side:v1"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}}},
                {"name": "b", "ready": false, "restartCount": 1, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}
        });
        let now = humantime::parse_rfc3339("2026-01-01T00:05:00Z").unwrap();
        let t = table(
            "meta.k8s.io/v1",
            "Pod",
            std::slice::from_ref(&pod),
            json!({"resourceVersion": "7"}),
            IncludeObject::Metadata,
            now,
        );
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["priority"] == 0)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Ready", "Status", "Restarts", "Age"]);
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "web-1",
                "1/2",
                "CrashLoopBackOff",
                3,
                "5m",
                "pi-1",
                "web:v1,side:v1"
            ])
        );
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["rows"][0]["object"]["metadata"]["labels"]["app"], "web");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }

    #[test]
    fn workload_rows_count_replicas_and_show_templates() {
        let d = json!({
            "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "web:v2"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let now = SystemTime::now();
        let cells: Vec<String> = columns("Deployment")
            .iter()
            .map(|c| cell_text(&c.cell(&d, now)))
            .collect();
        assert_eq!(
            cells,
            [
                "web",
                "2/3",
                "3",
                "2",
                "<unknown>",
                "web",
                "web:v2",
                "app=web"
            ]
        );
        let ev = json!({"metadata": {"name": "e1"}, "type": "Warning", "reason": "BackOff",
                        "involvedObject": {"kind": "Pod", "name": "web-1"}, "message": "restarting", "count": 4});
        let cells: Vec<String> = columns("Event")
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| cell_text(&c.cell(&ev, now)))
            .collect();
        assert_eq!(
            cells,
            ["<unknown>", "Warning", "BackOff", "pod/web-1", "restarting"]
        );
    }

    #[test]
    fn node_status_shows_cordon_and_roles() {
        let n = json!({"metadata": {"name": "pi", "labels": {"node-role.kubernetes.io/edge": ""}},
                       "spec": {"unschedulable": true},
                       "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                  "nodeInfo": {"kubeletVersion": "v0.1.0"}}});
        let now = SystemTime::now();
        let cells: Vec<String> = columns("Node")
            .iter()
            .filter(|c| c.priority == 0)
            .map(|c| cell_text(&c.cell(&n, now)))
            .collect();
        assert_eq!(
            cells,
            [
                "pi",
                "Ready,SchedulingDisabled",
                "edge",
                "<unknown>",
                "v0.1.0"
            ]
        );
    }
}
