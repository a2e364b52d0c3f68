//! Bookkeeping of what each node should run, and at which revision.
//!
//! A node's desired-state revision is the store revision of the last write
//! that changed what the node runs: a pod bound to it, changed in spec
//! (generation), marked for deletion, or removed. Status writes do not count,
//! so an agent's own reports never make the hub resend its desired state.
//! This is pure bookkeeping: no IO, fed by store events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

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

/// How many deletions the hub remembers per node. An agent that has been
/// away for more deletions than this (or since before the hub started) gets
/// a full snapshot instead of a delta.
pub const MAX_TOMBSTONES: usize = 1024;

/// The history of one node's desired state, as far as deltas need it.
#[derive(Debug, Default)]
struct NodeHistory {
    /// Revision of the node's desired state.
    revision: u64,
    /// Deltas can start at this revision or later; earlier ones need a
    /// snapshot (what happened before is forgotten).
    floor: u64,
    /// Pods removed from the node: (revision, uid), oldest first, at most
    /// [`MAX_TOMBSTONES`].
    tombstones: VecDeque<(u64, String)>,
}

/// What changed for a node since a revision: pod store keys to send again,
/// uids of pods removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub upserts: Vec<String>,
    pub deleted: Vec<String>,
}

/// Per-node desired-state revisions and bounded history.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Pod key → what the node has been told about it, and the revision at
    /// which that last changed.
    pods: HashMap<String, (Entry, u64)>,
    nodes: BTreeMap<String, NodeHistory>,
    /// The revision every node starts from: the store's revision when the
    /// tracker was built. After a hub restart every node's revision is at
    /// least this, so a deletion made before the restart can never make a
    /// node's revision go backwards; history before it is unknown, so
    /// agents behind it get one full snapshot.
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
                t.pods.insert(key, (entry, store_revision));
            }
        }
        t
    }

    fn history(&mut self, node: &str) -> &mut NodeHistory {
        let baseline = self.baseline;
        self.nodes
            .entry(node.to_string())
            .or_insert_with(|| NodeHistory {
                revision: baseline,
                floor: baseline,
                tombstones: VecDeque::new(),
            })
    }

    /// Store keys of the pods bound to `node` (being deleted or not), in
    /// key order: what a snapshot or a status digest reads, without listing
    /// every pod of the fleet.
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, (e, _))| e.node == node)
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// The desired-state revision of `node`.
    pub fn revision(&self, node: &str) -> u64 {
        self.nodes
            .get(node)
            .map(|h| h.revision)
            .unwrap_or(self.baseline)
    }

    /// Makes sure `node`'s revision is above `floor` (an agent that has
    /// applied a revision this hub never issued, e.g. after the hub's store
    /// was replaced). No delta can start below the new revision. Returns it.
    ///
    /// The floor comes from the agent (its `Hello`): at `u64::MAX` the
    /// revision stays there (saturates) rather than overflowing.
    pub fn raise_above(&mut self, node: &str, floor: u64) -> u64 {
        let h = self.history(node);
        h.revision = h.revision.max(floor.saturating_add(1));
        h.floor = h.revision;
        h.revision
    }

    /// Bumps `node` to a revision for a change made at store revision
    /// `revision` (normally that one; above it only if the node was raised,
    /// see [`Tracker::raise_above`]: a node's revision never goes back).
    fn bump(&mut self, node: &str, revision: u64) -> u64 {
        let h = self.history(node);
        h.revision = revision.max(h.revision.saturating_add(1));
        h.revision
    }

    /// Applies one pod write at `revision`: `Some(pod)` for a create or
    /// update, `None` for a removal. Returns the nodes whose desired state
    /// changed.
    pub fn apply(&mut self, key: &str, pod: Option<&Value>, revision: u64) -> HashSet<String> {
        let before = self.pods.get(key).map(|(e, _)| e.clone());
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
        let mut revs = HashMap::new();
        for node in &changed {
            revs.insert(node.clone(), self.bump(node, revision));
        }
        // The pod left a node (removed, or bound elsewhere): remember its
        // uid there, so that a delta can say it is gone.
        if let Some(b) = &before
            && after
                .as_ref()
                .is_none_or(|a| a.node != b.node || a.uid != b.uid)
        {
            let rev = revs[&b.node];
            let h = self.history(&b.node);
            h.tombstones.push_back((rev, b.uid.clone()));
            while h.tombstones.len() > MAX_TOMBSTONES {
                if let Some((dropped, _)) = h.tombstones.pop_front() {
                    h.floor = h.floor.max(dropped);
                }
            }
        }
        match after {
            Some(a) => {
                let rev = revs[&a.node];
                self.pods.insert(key.to_string(), (a, rev))
            }
            None => self.pods.remove(key),
        };
        changed
    }

    /// A ConfigMap or Secret (store key `key`) was written or removed at
    /// `revision`: bumps every node running a pod that names it, and only
    /// those, and marks those pods changed. Returns the nodes.
    pub fn touch(&mut self, key: &str, revision: u64) -> HashSet<String> {
        let changed: HashSet<String> = self
            .pods
            .values()
            .filter(|(e, _)| e.refs.contains(key))
            .map(|(e, _)| e.node.clone())
            .collect();
        let mut revs = HashMap::new();
        for node in &changed {
            revs.insert(node.clone(), self.bump(node, revision));
        }
        for (e, at) in self.pods.values_mut() {
            if e.refs.contains(key) {
                *at = revs[&e.node];
            }
        }
        changed
    }

    /// What changed for `node` after revision `from`, if the tracker still
    /// knows: `None` when `from` is older than the node's history (or newer
    /// than its revision), and a snapshot is needed.
    ///
    /// Guarantees: applying the result to the node's desired state at
    /// `from` gives its desired state now. Pods that changed more than once
    /// are listed once; a pod may be listed although it is back to what the
    /// agent has (applying it again is harmless).
    pub fn changes_since(&self, node: &str, from: u64) -> Option<Changes> {
        let (revision, floor) = match self.nodes.get(node) {
            Some(h) => (h.revision, h.floor),
            None => (self.baseline, self.baseline),
        };
        if from < floor || from > revision {
            return None;
        }
        let mut upserts: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, (e, at))| e.node == node && *at > from)
            .map(|(k, _)| k.clone())
            .collect();
        upserts.sort();
        let deleted = self
            .nodes
            .get(node)
            .map(|h| {
                h.tombstones
                    .iter()
                    .filter(|(at, _)| *at > from)
                    .map(|(_, uid)| uid.clone())
                    .collect()
            })
            .unwrap_or_default();
        Some(Changes { upserts, deleted })
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

    fn named(name: &str, uid: &str, node: &str, generation: i64) -> Value {
        let mut p = pod(Some(node), generation, false);
        p["metadata"]["name"] = json!(name);
        p["metadata"]["uid"] = json!(uid);
        p
    }

    #[test]
    fn deltas_list_what_changed_since_a_revision_deletions_included() {
        let mut t = Tracker::new(&[named("keep", "u-keep", "pi", 1)], 10);
        // Nothing changed since the baseline.
        assert_eq!(t.changes_since("pi", 10), Some(Changes::default()));
        t.apply(
            "pods/default/new",
            Some(&named("new", "u-new", "pi", 1)),
            11,
        );
        t.apply(
            "pods/default/keep",
            Some(&named("keep", "u-keep", "pi", 2)),
            12,
        );
        t.apply("pods/default/new", None, 13);
        t.apply("pods/default/b", Some(&named("b", "u-b", "other", 1)), 14);
        assert_eq!(t.revision("pi"), 13);
        assert_eq!(
            t.changes_since("pi", 10),
            Some(Changes {
                upserts: vec!["pods/default/keep".into()],
                deleted: vec!["u-new".into()],
            })
        );
        assert_eq!(
            t.changes_since("pi", 12),
            Some(Changes {
                upserts: vec![],
                deleted: vec!["u-new".into()],
            })
        );
        assert_eq!(t.changes_since("pi", 13), Some(Changes::default()));
        // Before the hub's history, or past the node's revision: snapshot.
        assert_eq!(t.changes_since("pi", 9), None);
        assert_eq!(t.changes_since("pi", 14), None);
        // A node the tracker never saw, at the baseline: nothing to send.
        assert_eq!(t.changes_since("fresh", 10), Some(Changes::default()));
    }

    #[test]
    fn a_config_map_change_resends_the_pods_that_name_it() {
        let mut t = Tracker::new(&[], 1);
        let mut uses = named("a", "u-a", "pi", 1);
        uses["spec"]["volumes"] = json!([{"name": "c", "configMap": {"name": "app"}}]);
        t.apply("pods/default/a", Some(&uses), 2);
        t.apply("pods/default/b", Some(&named("b", "u-b", "pi", 1)), 3);
        t.touch("configmaps/default/app", 4);
        assert_eq!(
            t.changes_since("pi", 3).unwrap().upserts,
            vec!["pods/default/a".to_string()]
        );
    }

    #[test]
    fn history_is_bounded_and_older_agents_get_a_snapshot() {
        let mut t = Tracker::new(&[], 0);
        let mut rev = 0;
        for i in 0..MAX_TOMBSTONES + 10 {
            let key = format!("pods/default/p{i}");
            rev += 1;
            t.apply(
                &key,
                Some(&named(&format!("p{i}"), &format!("u{i}"), "pi", 1)),
                rev,
            );
            rev += 1;
            t.apply(&key, None, rev);
        }
        assert_eq!(t.nodes["pi"].tombstones.len(), MAX_TOMBSTONES);
        assert_eq!(t.changes_since("pi", 0), None);
        let recent = t.changes_since("pi", rev - 2).unwrap();
        assert_eq!(recent.deleted.len(), 1);
        assert!(recent.upserts.is_empty());
    }

    #[test]
    fn a_raised_node_takes_no_delta_from_below_its_new_revision() {
        let mut t = Tracker::new(&[], 5);
        let rev = t.raise_above("pi", 90);
        assert_eq!(t.changes_since("pi", 90), None);
        assert_eq!(t.changes_since("pi", rev), Some(Changes::default()));
    }

    #[test]
    fn a_pod_moved_to_another_node_is_deleted_on_the_first() {
        let mut t = Tracker::new(&[], 1);
        t.apply("pods/default/a", Some(&named("a", "u-a", "pi", 1)), 2);
        t.apply("pods/default/a", Some(&named("a", "u-a", "other", 1)), 3);
        let pi = t.changes_since("pi", 2).unwrap();
        assert_eq!(pi.deleted, vec!["u-a".to_string()]);
        assert!(pi.upserts.is_empty());
        let other = t.changes_since("other", 1).unwrap();
        assert_eq!(other.upserts, vec!["pods/default/a".to_string()]);
    }

    /// Any run of pod writes, removals and raises from agents: revisions
    /// never go back, one revision is one desired set, and a delta from
    /// any earlier revision the tracker still answers for turns the set
    /// at that revision into the current one. Agents claiming revision
    /// `u64::MAX` are among the cases (an overflow before saturation).
    mod properties {
        use std::collections::BTreeMap;

        use proptest::prelude::*;
        use spoke_api::fuzz::config;

        use super::*;

        const NODES: [&str; 3] = ["pi", "other", "third"];

        #[derive(Debug, Clone)]
        enum Op {
            Write {
                pod: usize,
                node: Option<usize>,
                uid: usize,
                generation: i64,
                deleting: bool,
            },
            Remove {
                pod: usize,
            },
            Raise {
                node: usize,
                floor: u64,
            },
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0usize..4, proptest::option::of(0usize..3), 0usize..3, 1i64..3, any::<bool>())
                    .prop_map(|(pod, node, uid, generation, deleting)| Op::Write { pod, node, uid, generation, deleting }),
                2 => (0usize..4).prop_map(|pod| Op::Remove { pod }),
                1 => (0usize..3, prop_oneof![0u64..200, Just(u64::MAX - 1), Just(u64::MAX), any::<u64>()])
                    .prop_map(|(node, floor)| Op::Raise { node, floor }),
            ]
        }

        /// What `node` runs: pod key → uid.
        fn set(t: &Tracker, node: &str) -> BTreeMap<String, String> {
            t.pods
                .iter()
                .filter(|(_, (e, _))| e.node == node)
                .map(|(k, (e, _))| (k.clone(), e.uid.clone()))
                .collect()
        }

        proptest! {
            #![proptest_config(config(256))]

            #[test]
            fn deltas_rebuild_the_desired_set_from_any_revision_they_answer_for(
                ops in prop::collection::vec(op(), 0..40),
                gaps in prop::collection::vec(1u64..3, 40),
            ) {
                let mut t = Tracker::new(&[], 5);
                let mut store_revision = 5u64;
                // node → revision → the set at that revision.
                let mut seen: BTreeMap<&str, BTreeMap<u64, BTreeMap<String, String>>> = BTreeMap::new();
                for (op, gap) in ops.into_iter().zip(gaps) {
                    let before: Vec<u64> = NODES.iter().map(|n| t.revision(n)).collect();
                    match op {
                        Op::Write { pod, node, uid, generation, deleting } => {
                            store_revision += gap;
                            let mut p = json!({"metadata": {"namespace": "default", "name": format!("p{pod}"),
                                                            "uid": format!("u{pod}-{uid}"), "generation": generation},
                                               "spec": {}});
                            if let Some(n) = node {
                                p["spec"]["nodeName"] = json!(NODES[n]);
                            }
                            if deleting {
                                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                            }
                            t.apply(&format!("pods/default/p{pod}"), Some(&p), store_revision);
                        }
                        Op::Remove { pod } => {
                            store_revision += gap;
                            t.apply(&format!("pods/default/p{pod}"), None, store_revision);
                        }
                        Op::Raise { node, floor } => {
                            let r = t.raise_above(NODES[node], floor);
                            prop_assert!(r > floor || r == u64::MAX);
                        }
                    }
                    for (i, node) in NODES.iter().enumerate() {
                        let rev = t.revision(node);
                        prop_assert!(rev >= before[i], "{} went back from {} to {}", node, before[i], rev);
                        let now = set(&t, node);
                        let history = seen.entry(node).or_default();
                        if rev < u64::MAX
                            && let Some(earlier) = history.get(&rev)
                        {
                            prop_assert_eq!(earlier, &now, "{} has two sets at revision {}", node, rev);
                        }
                        history.insert(rev, now.clone());
                        for (from, old) in history.iter() {
                            let Some(changes) = t.changes_since(node, *from) else { continue };
                            let mut rebuilt = old.clone();
                            rebuilt.retain(|_, uid| !changes.deleted.contains(uid));
                            for key in &changes.upserts {
                                if let Some(uid) = now.get(key) {
                                    rebuilt.insert(key.clone(), uid.clone());
                                }
                            }
                            prop_assert_eq!(&rebuilt, &now, "{} from {} to {}: {:?}", node, from, rev, changes);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn pods_on_a_node_come_from_the_tracker_without_reading_the_store() {
        let bound = |name: &str, node: &str| {
            let mut p = pod(Some(node), 1, false);
            p["metadata"]["name"] = json!(name);
            p
        };
        let mut t = Tracker::new(&[bound("a", "n1"), bound("b", "n2")], 10);
        t.apply("pods/default/c", Some(&bound("c", "n1")), 11);
        assert_eq!(t.pods_on("n1"), ["pods/default/a", "pods/default/c"]);
        t.apply("pods/default/a", None, 12);
        assert_eq!(t.pods_on("n1"), ["pods/default/c"]);
        assert!(t.pods_on("n3").is_empty());
    }
}
