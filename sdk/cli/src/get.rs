//! `spoke get`: objects as kubectl prints them (the columns of
//! [`spoke_api::table`], which the hub also serves to kubectl), or as YAML,
//! JSON, names or a JSONPath template; `-w` keeps printing changes.

use std::time::SystemTime;

use anyhow::{Context as _, anyhow};
use serde_json::Value;
use spoke_api::resource::ResourceType;
use spoke_api::table::{self, Column};
use spoke_client::Client;

use crate::jsonpath::Template;

/// What `spoke get` was asked.
#[derive(clap::Args)]
pub struct Args {
    /// Kinds, comma-separated (pods,deployments), or KIND/NAME arguments.
    /// Kinds: pods (po), nodes (no), namespaces (ns), deployments (deploy),
    /// replicasets (rs), daemonsets (ds), jobs, cronjobs (cj),
    /// configmaps (cm), secrets, events (ev), resourcequotas, limitranges.
    kind: String,
    /// Names to show (all when none).
    names: Vec<String>,
    /// Output format: wide, yaml, json, name, or jsonpath=TEMPLATE.
    #[arg(short, long)]
    output: Option<String>,
    /// List across all namespaces.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Label selector, such as app=hello.
    #[arg(short = 'l', long)]
    selector: Option<String>,
    /// Field selector, such as spec.nodeName=pi-1.
    #[arg(long)]
    field_selector: Option<String>,
    /// Add a LABELS column.
    #[arg(long)]
    show_labels: bool,
    /// After listing, keep printing changes until interrupted.
    #[arg(short, long)]
    watch: bool,
}

/// How to print what was fetched.
enum Output {
    Table { wide: bool },
    Json,
    Yaml,
    Name,
    JsonPath(Template),
}

impl Output {
    fn parse(s: Option<&str>) -> anyhow::Result<Output> {
        Ok(match s {
            None => Output::Table { wide: false },
            Some("wide") => Output::Table { wide: true },
            Some("json") => Output::Json,
            Some("yaml") => Output::Yaml,
            Some("name") => Output::Name,
            Some(o) if o.starts_with("jsonpath=") || o.starts_with("jsonpath-as-json=") => {
                let t = o.split_once('=').map(|(_, t)| t).unwrap_or("");
                Output::JsonPath(
                    Template::parse(t).map_err(|e| anyhow!("error parsing jsonpath {t}: {e}"))?,
                )
            }
            Some(other) => {
                return Err(anyhow!(
                    "unable to match a printer for output format \"{other}\": use wide, yaml, json, name or jsonpath=TEMPLATE"
                ));
            }
        })
    }
}

/// The kinds and names asked for: `pods`, `pods,deploy`, `pod NAME...` or
/// `pod/NAME deploy/NAME`.
fn targets(
    kind: &str,
    names: &[String],
) -> anyhow::Result<Vec<(&'static ResourceType, Vec<String>)>> {
    if kind.contains('/') {
        let mut out: Vec<(&'static ResourceType, Vec<String>)> = Vec::new();
        for arg in std::iter::once(kind).chain(names.iter().map(String::as_str)) {
            let (k, n) = arg.split_once('/').ok_or_else(|| {
                anyhow!("there is no need to give a kind once KIND/NAME was used: write {arg} as KIND/{arg}")
            })?;
            let rt = crate::lookup(k)?;
            match out.iter_mut().find(|(r, _)| *r == rt) {
                Some((_, names)) => names.push(n.to_string()),
                None => out.push((rt, vec![n.to_string()])),
            }
        }
        return Ok(out);
    }
    let kinds: Vec<&str> = kind.split(',').filter(|k| !k.is_empty()).collect();
    if kinds.len() > 1 && !names.is_empty() {
        return Err(anyhow!(
            "names cannot be given with several kinds: use KIND/NAME arguments"
        ));
    }
    kinds
        .into_iter()
        .map(|k| Ok((crate::lookup(k)?, names.to_vec())))
        .collect()
}

/// What was fetched for one kind.
struct Fetched {
    rt: &'static ResourceType,
    items: Vec<Value>,
    revision: Option<String>,
}

pub async fn run(client: &Client, default_ns: &str, args: Args) -> anyhow::Result<()> {
    let output = Output::parse(args.output.as_deref())?;
    let targets = targets(&args.kind, &args.names)?;
    let ns = (!args.all_namespaces).then_some(default_ns);
    let mut fetched = Vec::new();
    for (rt, names) in &targets {
        let ns = ns.filter(|_| rt.namespaced);
        fetched.push(fetch(client, rt, ns, names, &args).await?);
    }
    let several_kinds = fetched.len() > 1;
    if args.watch && several_kinds {
        return Err(anyhow!("watch is only supported on one kind at a time"));
    }
    let wide = matches!(output, Output::Table { wide: true });
    // One printer per kind, kept for the watch so that its rows line up
    // under the header printed first.
    let printers: Vec<Printer> = fetched
        .iter()
        .map(|f| Printer::new(f.rt, wide, ns.is_none(), args.show_labels, several_kinds))
        .collect();
    // One object asked for by name is printed as itself, else as a List.
    let one_object = matches!(targets.as_slice(), [(_, names)] if names.len() == 1);
    let all: Vec<Value> = fetched.iter().flat_map(|f| f.items.clone()).collect();
    let document = || {
        if one_object && all.len() == 1 {
            all[0].clone()
        } else {
            serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": all})
        }
    };
    match &output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&document())?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&document())?),
        Output::JsonPath(t) => print!(
            "{}",
            t.render(&document())
                .map_err(|e| anyhow!("error executing jsonpath: {e}"))?
        ),
        Output::Name => {
            for f in &fetched {
                for i in &f.items {
                    println!("{}", qualified(f.rt, &name_of(i)));
                }
            }
        }
        Output::Table { .. } => {
            if all.is_empty() && !args.watch {
                match ns {
                    Some(ns) if targets.iter().any(|(rt, _)| rt.namespaced) => {
                        eprintln!("No resources found in {ns} namespace.")
                    }
                    _ => eprintln!("No resources found"),
                }
            }
            let mut first = true;
            for (f, printer) in fetched.iter().zip(&printers) {
                if f.items.is_empty() && !args.watch {
                    continue;
                }
                if !first {
                    println!();
                }
                first = false;
                print!("{}", printer.print(&f.items, true));
            }
        }
    }
    if args.watch {
        let name = targets[0].1.first().map(String::as_str);
        watch(client, &fetched[0], ns, name, &args, &output, &printers[0]).await?;
    }
    Ok(())
}

async fn fetch(
    client: &Client,
    rt: &'static ResourceType,
    ns: Option<&str>,
    names: &[String],
    args: &Args,
) -> anyhow::Result<Fetched> {
    if names.is_empty() {
        let path = format!("{}{}", rt.collection_path(ns), query(args, None));
        let list: Value = client.get(&path).await?;
        return Ok(Fetched {
            rt,
            items: list["items"].as_array().cloned().unwrap_or_default(),
            revision: list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from),
        });
    }
    let mut items = Vec::new();
    for name in names {
        match client.get(&rt.object_path(ns, name)).await {
            Ok(v) => items.push(v),
            Err(e) if e.code() == Some(404) => {
                return Err(anyhow!(crate::not_found(rt, ns, name)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Fetched {
        rt,
        items,
        revision: None,
    })
}

/// `?labelSelector=...&fieldSelector=...` of a list or watch.
fn query(args: &Args, name: Option<&str>) -> String {
    let mut fields: Vec<String> = args.field_selector.iter().cloned().collect();
    if let Some(n) = name {
        fields.push(format!("metadata.name={n}"));
    }
    let mut parts = Vec::new();
    if let Some(sel) = &args.selector {
        parts.push(format!("labelSelector={}", encode(sel)));
    }
    if !fields.is_empty() {
        parts.push(format!("fieldSelector={}", encode(&fields.join(","))));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Prints each change after the listing: a row per event for tables, a
/// document per event otherwise.
async fn watch(
    client: &Client,
    f: &Fetched,
    ns: Option<&str>,
    name: Option<&str>,
    args: &Args,
    output: &Output,
    printer: &Printer,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let ns = ns.filter(|_| f.rt.namespaced);
    let path = format!("{}{}", f.rt.collection_path(ns), query(args, name));
    let from = match &f.revision {
        Some(rv) => rv.clone(),
        None => f
            .items
            .iter()
            .filter_map(|i| {
                i.pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
            })
            .filter_map(|rv| rv.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            .to_string(),
    };
    let mut w = client
        .watch(&path, Some(&from))
        .await
        .context("cannot watch")?;
    while let Some(event) = w.next().await {
        let event = event?;
        let object = &event["object"];
        match event["type"].as_str() {
            Some("ERROR") => {
                return Err(anyhow!(
                    "the watch ended: {}",
                    object["message"].as_str().unwrap_or("unknown error")
                ));
            }
            Some("BOOKMARK") => continue,
            _ => {}
        }
        match output {
            Output::Table { .. } => {
                print!("{}", printer.print(std::slice::from_ref(object), false))
            }
            Output::Json => println!("{}", serde_json::to_string_pretty(object)?),
            Output::Yaml => print!("---\n{}", serde_yaml::to_string(object)?),
            Output::Name => println!("{}", qualified(f.rt, &name_of(object))),
            Output::JsonPath(t) => print!("{}", t.render(object).map_err(|e| anyhow!(e))?),
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn name_of(v: &Value) -> String {
    v.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// `pod/web` or `deployment.apps/web`, as kubectl names objects.
pub fn qualified(rt: &ResourceType, name: &str) -> String {
    if rt.group.is_empty() {
        format!("{}/{name}", rt.singular)
    } else {
        format!("{}.{}/{name}", rt.singular, rt.group)
    }
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Prints rows of one kind in kubectl's layout.
struct Printer {
    rt: &'static ResourceType,
    columns: Vec<Column>,
    namespace: bool,
    labels: bool,
    qualify: bool,
    /// Column widths, fixed by the first print so that watched rows line
    /// up under the header.
    widths: std::cell::RefCell<Vec<usize>>,
}

impl Printer {
    fn new(
        rt: &'static ResourceType,
        wide: bool,
        all_namespaces: bool,
        labels: bool,
        qualify: bool,
    ) -> Printer {
        Printer {
            rt,
            columns: table::columns(rt.kind)
                .into_iter()
                .filter(|c| wide || c.priority == 0)
                .collect(),
            namespace: all_namespaces && rt.namespaced,
            labels,
            qualify,
            widths: Default::default(),
        }
    }

    fn header(&self) -> Vec<String> {
        let mut row = Vec::new();
        if self.namespace {
            row.push("NAMESPACE".to_string());
        }
        row.extend(self.columns.iter().map(|c| c.name.to_uppercase()));
        if self.labels {
            row.push("LABELS".into());
        }
        row
    }

    fn row(&self, item: &Value, now: SystemTime) -> Vec<String> {
        let mut row = Vec::new();
        if self.namespace {
            row.push(
                item.pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
        for c in &self.columns {
            let mut text = table::cell_text(&c.cell(item, now));
            if self.qualify && c.format == "name" {
                text = qualified(self.rt, &text);
            }
            row.push(text);
        }
        if self.labels {
            let labels: Vec<String> = item
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            row.push(if labels.is_empty() {
                "<none>".into()
            } else {
                labels.join(",")
            });
        }
        row
    }

    fn print(&self, items: &[Value], header: bool) -> String {
        let now = SystemTime::now();
        let mut rows = Vec::new();
        if header {
            rows.push(self.header());
        }
        rows.extend(items.iter().map(|i| self.row(i, now)));
        let mut widths = self.widths.borrow_mut();
        for row in &rows {
            let len = widths.len().max(row.len());
            widths.resize(len, 0);
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        align_to(&rows, &widths)
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
    align_to(rows, &widths)
}

/// [`align`] with the column widths given.
fn align_to(rows: &[Vec<String>], widths: &[usize]) -> String {
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
    fn printer_adds_namespace_and_labels_and_qualifies_names() {
        let deploy = ResourceType::lookup("deploy").unwrap();
        let p = Printer::new(deploy, false, true, true, true);
        let d = json!({"metadata": {"name": "web", "namespace": "edge", "labels": {"app": "web"}},
                       "spec": {"replicas": 2}, "status": {"readyReplicas": 1}});
        let text = p.print(&[d], true);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            [
                "NAMESPACE",
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "LABELS"
            ]
        );
        assert_eq!(
            lines[1],
            [
                "edge",
                "deployment.apps/web",
                "1/2",
                "0",
                "0",
                "<unknown>",
                "app=web"
            ]
        );
    }

    #[test]
    fn targets_accept_lists_of_kinds_and_kind_slash_name() {
        let t = targets("pods,deploy", &[]).unwrap();
        assert_eq!(
            t.iter().map(|(r, _)| r.kind).collect::<Vec<_>>(),
            ["Pod", "Deployment"]
        );
        let t = targets("pod/a", &["deploy/b".into(), "pod/c".into()]).unwrap();
        assert_eq!(t[0].1, ["a", "c"]);
        assert_eq!(t[1].1, ["b"]);
        assert!(targets("pods,deploy", &["x".into()]).is_err());
        assert!(targets("gadgets", &[]).is_err());
    }
}
