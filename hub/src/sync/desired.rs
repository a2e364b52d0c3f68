//! Bookkeeping of what each node should run, and at which revision.
//!
//! A node's desired-state revision is the store revision of the last write
//! that changed what the node runs: a pod bound to it, changed in spec
//! (generation), marked for deletion, or removed. Status writes do not count,
//! so an agent's own reports never make the hub resend its desired state.
//! This is pure bookkeeping: no IO, fed by store events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

/// What about a pod matters to the node running it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    node: String,
    uid: String,
    generation: i64,
    deleting: bool,
    /// Store keys of the ConfigMaps and Secrets the pod's spec names.
    refs: BTreeSet<String>,
}

impl Entry {
    fn of(pod: &Value) -> Option<Entry> {
        Some(Entry {
            node: pod.pointer("/spec/nodeName")?.as_str()?.to_string(),
            uid: pod
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            generation: pod
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            deleting: pod.pointer("/metadata/deletionTimestamp").is_some(),
            refs: config_refs(pod),
        })
    }
}

/// Per-node desired-state revisions.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Pod key → what the node has been told about it.
    pods: HashMap<String, Entry>,
    /// Node → revision of its desired state.
    revisions: BTreeMap<String, u64>,
    /// The revision every node starts from: the store's revision when the
    /// tracker was built. After a hub restart every node's revision is at
    /// least this, so a deletion made before the restart can never make a
    /// node's revision go backwards; agents then get one full snapshot.
    baseline: u64,
}

impl Tracker {
    /// Builds the tracker from every pod and the store's current revision.
    pub fn new(pods: &[Value], store_revision: u64) -> Tracker {
        let mut t = Tracker {
            baseline: store_revision,
            ..Tracker::default()
        };
        for pod in pods {
            if let (Some(key), Some(entry)) = (pod_key(pod), Entry::of(pod)) {
                t.revisions.insert(entry.node.clone(), store_revision);
                t.pods.insert(key, entry);
            }
        }
        t
    }

    /// The desired-state revision of `node`.
    pub fn revision(&self, node: &str) -> u64 {
        self.revisions.get(node).copied().unwrap_or(self.baseline)
    }

    /// Makes sure `node`'s revision is above `floor` (an agent that has
    /// applied a revision this hub never issued, e.g. after the hub's store
    /// was replaced). Returns the new revision.
    pub fn raise_above(&mut self, node: &str, floor: u64) -> u64 {
        let rev = self.revision(node).max(floor + 1);
        self.revisions.insert(node.to_string(), rev);
        rev
    }

    /// Applies one pod write at `revision`: `Some(pod)` for a create or
    /// update, `None` for a removal. Returns the nodes whose desired state
    /// changed.
    pub fn apply(&mut self, key: &str, pod: Option<&Value>, revision: u64) -> HashSet<String> {
        let before = self.pods.get(key).cloned();
        let after = pod.and_then(Entry::of);
        let mut changed = HashSet::new();
        if before == after {
            return changed;
        }
        if let Some(b) = &before {
            changed.insert(b.node.clone());
        }
        if let Some(a) = &after {
            changed.insert(a.node.clone());
        }
        match after {
            Some(a) => self.pods.insert(key.to_string(), a),
            None => self.pods.remove(key),
        };
        for node in &changed {
            // Normally the store revision; above it only if the node was
            // raised (see `raise_above`): a node's revision never goes back.
            let rev = revision.max(self.revision(node) + 1);
            self.revisions.insert(node.clone(), rev);
        }
        changed
    }

    /// A ConfigMap or Secret (store key `key`) was written or removed at
    /// `revision`: bumps every node running a pod that names it, and only
    /// those. Returns them.
    pub fn touch(&mut self, key: &str, revision: u64) -> HashSet<String> {
        let changed: HashSet<String> = self
            .pods
            .values()
            .filter(|e| e.refs.contains(key))
            .map(|e| e.node.clone())
            .collect();
        for node in &changed {
            let rev = revision.max(self.revision(node) + 1);
            self.revisions.insert(node.clone(), rev);
        }
        changed
    }
}

/// Store keys of the ConfigMaps and Secrets a pod's spec names.
fn config_refs(pod: &Value) -> BTreeSet<String> {
    let Some(ns) = pod.pointer("/metadata/namespace").and_then(Value::as_str) else {
        return BTreeSet::new();
    };
    let Some(spec) = pod
        .get("spec")
        .and_then(|s| serde_json::from_value::<spoke_api::core::PodSpec>(s.clone()).ok())
    else {
        return BTreeSet::new();
    };
    spec.config_refs()
        .into_iter()
        .map(|(secret, name)| {
            crate::store::key(
                if secret { "secrets" } else { "configmaps" },
                Some(ns),
                &name,
            )
        })
        .collect()
}

fn pod_key(pod: &Value) -> Option<String> {
    let ns = pod.pointer("/metadata/namespace")?.as_str()?;
    let name = pod.pointer("/metadata/name")?.as_str()?;
    Some(crate::store::key("pods", Some(ns), name))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(node: Option<&str>, generation: i64, deleting: bool) -> Value {
        let mut p = json!({"metadata": {"namespace": "default", "name": "a", "uid": "u1", "generation": generation},
                           "spec": {}, "status": {"phase": "Running"}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        p
    }

    #[test]
    fn only_what_the_node_runs_bumps_its_revision() {
        let mut t = Tracker::new(&[], 10);
        let k = "pods/default/a";
        assert_eq!(t.revision("pi"), 10);
        // Unbound pods concern no node.
        assert!(t.apply(k, Some(&pod(None, 1, false)), 11).is_empty());
        // Binding concerns the node.
        assert_eq!(
            t.apply(k, Some(&pod(Some("pi"), 1, false)), 12),
            HashSet::from(["pi".to_string()])
        );
        assert_eq!(t.revision("pi"), 12);
        // A status write (same uid, generation, no deletion) does not.
        let mut status_only = pod(Some("pi"), 1, false);
        status_only["status"]["phase"] = json!("Succeeded");
        assert!(t.apply(k, Some(&status_only), 13).is_empty());
        assert_eq!(t.revision("pi"), 12);
        // Spec change, deletion mark and removal do.
        assert_eq!(t.apply(k, Some(&pod(Some("pi"), 2, false)), 14).len(), 1);
        assert_eq!(t.apply(k, Some(&pod(Some("pi"), 2, true)), 15).len(), 1);
        assert_eq!(t.apply(k, None, 16).len(), 1);
        assert_eq!(t.revision("pi"), 16);
        // Other nodes are untouched.
        assert_eq!(t.revision("other"), 10);
    }

    #[test]
    fn a_config_map_change_bumps_only_nodes_whose_pods_name_it() {
        let mut t = Tracker::new(&[], 10);
        let mut uses = pod(Some("pi"), 1, false);
        uses["spec"]["volumes"] = json!([{"name": "c", "configMap": {"name": "app"}}]);
        t.apply("pods/default/a", Some(&uses), 11);
        let mut other = pod(Some("other"), 1, false);
        other["metadata"]["name"] = json!("b");
        other["spec"]["containers"] = json!([{"name": "m", "image": "x:1", "env": [
            {"name": "K", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]}]);
        t.apply("pods/default/b", Some(&other), 12);

        assert_eq!(
            t.touch("configmaps/default/app", 13),
            HashSet::from(["pi".to_string()])
        );
        assert_eq!(t.revision("pi"), 13);
        assert_eq!(t.revision("other"), 12);
        // Same name in another namespace, or a Secret of that name: nobody.
        assert!(t.touch("configmaps/prod/app", 14).is_empty());
        assert!(t.touch("secrets/default/app", 15).is_empty());
        assert_eq!(
            t.touch("secrets/default/creds", 16),
            HashSet::from(["other".to_string()])
        );
        assert_eq!(t.revision("pi"), 13);
    }

    #[test]
    fn a_rebuilt_tracker_never_goes_below_the_store_revision() {
        let pods = [pod(Some("pi"), 1, false)];
        let t = Tracker::new(&pods, 40);
        assert_eq!(t.revision("pi"), 40);
        assert_eq!(t.revision("empty-node"), 40);
    }

    #[test]
    fn an_agent_ahead_of_the_hub_gets_a_higher_revision() {
        let mut t = Tracker::new(&[], 5);
        assert_eq!(t.raise_above("pi", 90), 91);
        assert_eq!(t.revision("pi"), 91);
        // Later changes keep climbing from there.
        let mut p = pod(Some("pi"), 1, false);
        p["metadata"]["name"] = json!("b");
        t.apply("pods/default/b", Some(&p), 6);
        assert_eq!(t.revision("pi"), 92);
    }
}
