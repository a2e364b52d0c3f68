//! The workload controllers' reconcile steps over a real redb store, one
//! pass at a time, with pod status written as an agent would.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use spoke_api::resource::ResourceType;

use super::{deployment, pods, replicaset};
use crate::events::Recorder;
use crate::store::{self, RedbBackend, Store};

struct World {
    store: Store,
    rec: Recorder,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(RedbBackend::open(&dir.path().join("s.redb")).unwrap());
        let ns = ResourceType::lookup("namespaces").unwrap();
        crate::api::create_object(&store, ns, None, json!({"metadata": {"name": "default"}}))
            .await
            .unwrap();
        let rec = Recorder::new(store.clone(), "test");
        World {
            store,
            rec,
            _dir: dir,
        }
    }

    async fn create(&self, plural: &str, obj: Value) -> Value {
        let rt = ResourceType::lookup(plural).unwrap();
        crate::api::create_object(&self.store, rt, Some("default"), obj)
            .await
            .unwrap()
    }

    async fn get(&self, plural: &str, name: &str) -> Value {
        self.store
            .get(&store::key(plural, Some("default"), name))
            .await
            .unwrap()
            .unwrap()
    }

    async fn pods(&self) -> Vec<Value> {
        pods::list(&self.store, "pods", "default").await.unwrap()
    }

    /// Marks every live pod bound and Ready since `since`, as an agent would.
    async fn all_ready(&self, since: SystemTime) {
        for p in self.pods().await {
            if pods::deleting(&p) {
                continue;
            }
            let key = store::key("pods", Some("default"), pods::name(&p));
            let at = pods::rfc3339(since);
            self.store
                .modify(&key, |cur| {
                    let mut n = cur.clone();
                    if n["spec"]["nodeName"].is_null() {
                        n["spec"]["nodeName"] = json!("n1");
                    }
                    n["status"] = json!({"phase": "Running", "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": at}]});
                    Some(n)
                })
                .await
                .unwrap();
        }
    }

    /// Removes pods marked for deletion, as an agent stopping them would.
    async fn stop_deleted(&self) {
        for p in self.pods().await.iter().filter(|p| pods::deleting(p)) {
            let key = store::key("pods", Some("default"), pods::name(p));
            self.store.delete(&key, None).await.unwrap();
        }
    }

    async fn rs_pass(&self, now: SystemTime) {
        replicaset::pass(&self.store, &self.rec, now).await.unwrap();
    }
}

fn template(env: &str) -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"containers": [{"name": "m", "image": "hello:v1",
                                    "env": [{"name": "V", "value": env}]}]}})
}

#[tokio::test]
async fn replicaset_creates_owned_pods_adopts_releases_and_reports() {
    let w = World::new().await;
    let orphan = w
        .create(
            "pods",
            json!({"metadata": {"name": "stray", "labels": {"app": "web"}},
            "spec": template("x")["spec"]}),
        )
        .await;
    let rs = w
        .create(
            "replicasets",
            json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 3, "minReadySeconds": 10,
            "selector": {"matchLabels": {"app": "web"}}, "template": template("a")}}),
        )
        .await;
    let t0 = SystemTime::now();
    w.rs_pass(t0).await;
    let pods = w.pods().await;
    assert_eq!(pods.len(), 3, "the orphan counts as one of 3: {pods:?}");
    for p in &pods {
        assert_eq!(pods::controller_uid(p), Some(pods::uid(&rs)));
        let r = &p["metadata"]["ownerReferences"][0];
        assert_eq!(
            (r["kind"].as_str(), r["blockOwnerDeletion"].as_bool()),
            (Some("ReplicaSet"), Some(true))
        );
        if pods::name(p) != "stray" {
            assert!(pods::name(p).starts_with("web-"), "{}", pods::name(p));
        }
    }
    assert_eq!(pods::uid(&w.get("pods", "stray").await), pods::uid(&orphan));

    // Ready, but not yet for minReadySeconds: ready, not available.
    w.all_ready(t0).await;
    w.rs_pass(t0 + Duration::from_secs(5)).await;
    let st = &w.get("replicasets", "web").await["status"];
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["readyReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(st["observedGeneration"], 1);
    w.rs_pass(t0 + Duration::from_secs(11)).await;
    assert_eq!(
        w.get("replicasets", "web").await["status"]["availableReplicas"],
        3
    );

    // A pod relabelled out of the selector is released and replaced.
    let key = store::key("pods", Some("default"), "stray");
    w.store
        .modify(&key, |c| {
            let mut n = c.clone();
            n["metadata"]["labels"]["app"] = json!("debug");
            Some(n)
        })
        .await
        .unwrap();
    w.rs_pass(t0 + Duration::from_secs(12)).await;
    assert!(
        w.get("pods", "stray").await["metadata"]
            .get("ownerReferences")
            .is_none()
    );
    w.rs_pass(t0 + Duration::from_secs(12)).await;
    let owned = |ps: &[Value]| {
        ps.iter()
            .filter(|p| pods::controller_uid(p) == Some(pods::uid(&rs)) && !pods::deleting(p))
            .count()
    };
    assert_eq!(owned(&w.pods().await), 3);

    // Scale down to 1: the unready (new) one goes first.
    let key = store::key("replicasets", Some("default"), "web");
    w.store
        .modify(&key, |c| {
            let mut n = c.clone();
            n["spec"]["replicas"] = json!(1);
            n["metadata"]["generation"] = json!(2);
            Some(n)
        })
        .await
        .unwrap();
    w.rs_pass(t0 + Duration::from_secs(13)).await;
    let live: Vec<Value> = w
        .pods()
        .await
        .into_iter()
        .filter(|p| !pods::deleting(p) && pods::controller_uid(p).is_some())
        .collect();
    assert_eq!(live.len(), 1);
    assert!(pods::is_ready(&live[0]), "the ready pod stays: {live:?}");
    // Status is of the pods this pass started from; the next pass sees 1.
    w.rs_pass(t0 + Duration::from_secs(13)).await;
    let st = &w.get("replicasets", "web").await["status"];
    assert_eq!(
        (st["replicas"].as_i64(), st["observedGeneration"].as_i64()),
        (Some(1), Some(2))
    );
    let (events, _) = w.store.list("events/default/").await.unwrap();
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(
        reasons.contains(&"SuccessfulCreate") && reasons.contains(&"SuccessfulDelete"),
        "{reasons:?}"
    );
}

async fn deploy_pass(w: &World, now: SystemTime) {
    deployment::pass(&w.store, &w.rec, now).await.unwrap();
}

/// Runs Deployment and ReplicaSet passes, with pods turning ready at once
/// (`ready`) or never, until nothing changes.
async fn settle(w: &World, now: SystemTime, ready: bool) {
    for _ in 0..12 {
        deploy_pass(w, now).await;
        w.rs_pass(now).await;
        w.stop_deleted().await;
        if ready {
            w.all_ready(now).await;
        }
        w.rs_pass(now).await;
    }
}

fn owned_rs(all: &[Value], d: &Value) -> Vec<Value> {
    all.iter()
        .filter(|r| pods::controller_uid(r) == Some(pods::uid(d)))
        .cloned()
        .collect()
}

#[tokio::test]
async fn deployment_rolls_out_stalls_on_a_bad_version_and_rolls_back() {
    let w = World::new().await;
    let d = w
        .create(
            "deployments",
            json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 3, "progressDeadlineSeconds": 60,
            "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "selector": {"matchLabels": {"app": "web"}}, "template": template("v1")}}),
        )
        .await;
    let t0 = SystemTime::now();
    settle(&w, t0, true).await;
    let rss = owned_rs(
        &pods::list(&w.store, "replicasets", "default")
            .await
            .unwrap(),
        &d,
    );
    assert_eq!(rss.len(), 1);
    let v1 = pods::name(&rss[0]).to_string();
    assert_eq!(
        pods::labels(&rss[0])[deployment::HASH_LABEL],
        deployment::template_hash(&template("v1"))
    );
    assert_eq!(pods::annotation(&rss[0], deployment::REVISION), Some("1"));
    let dep = w.get("deployments", "web").await;
    let st = &dep["status"];
    assert_eq!(
        (
            st["replicas"].as_i64(),
            st["updatedReplicas"].as_i64(),
            st["availableReplicas"].as_i64()
        ),
        (Some(3), Some(3), Some(3))
    );
    let cond = |d: &Value, t: &str| {
        d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        cond(&dep, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    assert_eq!(cond(&dep, "Available")["status"], "True");

    // A bad version: its pods never get ready. The rollout stops with
    // maxUnavailable (1) old pod gone and the surge (1) spent.
    let set_template = |t: Value, generation: i64| {
        let key = store::key("deployments", Some("default"), "web");
        let store = w.store.clone();
        async move {
            store
                .modify(&key, |c| {
                    let mut n = c.clone();
                    n["spec"]["template"] = t.clone();
                    n["metadata"]["generation"] = json!(generation);
                    Some(n)
                })
                .await
                .unwrap();
        }
    };
    set_template(template("bad"), 2).await;
    let t1 = t0 + Duration::from_secs(1);
    settle(&w, t1, false).await;
    let rss = owned_rs(
        &pods::list(&w.store, "replicasets", "default")
            .await
            .unwrap(),
        &d,
    );
    let replicas = |name: &str| {
        rss.iter().find(|r| pods::name(r) == name).unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    };
    let bad = rss
        .iter()
        .map(pods::name)
        .find(|n| *n != v1)
        .unwrap()
        .to_string();
    assert_eq!((replicas(&v1), replicas(&bad)), (2, 2));
    let dep = w.get("deployments", "web").await;
    assert_eq!(dep["status"]["availableReplicas"], 2);
    assert_eq!(pods::annotation(&dep, deployment::REVISION), Some("2"));
    assert_eq!(cond(&dep, "Progressing")["status"], "True");
    // No progress for longer than progressDeadlineSeconds.
    deploy_pass(&w, t1 + Duration::from_secs(61)).await;
    let dep = w.get("deployments", "web").await;
    assert_eq!(
        cond(&dep, "Progressing")["reason"],
        "ProgressDeadlineExceeded"
    );
    assert_eq!(cond(&dep, "Progressing")["status"], "False");

    // Rollback: the old template again. Its ReplicaSet is the new one, with
    // revision 3, and the bad one goes to 0.
    set_template(template("v1"), 3).await;
    let t2 = t1 + Duration::from_secs(62);
    settle(&w, t2, true).await;
    let rss = owned_rs(
        &pods::list(&w.store, "replicasets", "default")
            .await
            .unwrap(),
        &d,
    );
    let replicas = |name: &str| {
        rss.iter().find(|r| pods::name(r) == name).unwrap()["spec"]["replicas"]
            .as_i64()
            .unwrap()
    };
    assert_eq!((replicas(&v1), replicas(&bad)), (3, 0));
    let v1rs = rss.iter().find(|r| pods::name(r) == v1).unwrap();
    assert_eq!(pods::annotation(v1rs, deployment::REVISION), Some("3"));
    let dep = w.get("deployments", "web").await;
    assert_eq!(
        cond(&dep, "Progressing")["reason"],
        "NewReplicaSetAvailable"
    );
    assert_eq!(dep["status"]["observedGeneration"], 3);
    let (events, _) = w.store.list("events/default/").await.unwrap();
    assert!(events.iter().any(|e| e["reason"] == "ScalingReplicaSet"));
}

#[tokio::test]
async fn old_replicasets_past_the_history_limit_are_pruned() {
    let w = World::new().await;
    w.create(
        "deployments",
        json!({"metadata": {"name": "web"}, "spec": {
        "replicas": 1, "revisionHistoryLimit": 1,
        "selector": {"matchLabels": {"app": "web"}}, "template": template("v1")}}),
    )
    .await;
    let t = SystemTime::now();
    for (i, v) in ["v1", "v2", "v3", "v4"].iter().enumerate() {
        let key = store::key("deployments", Some("default"), "web");
        w.store
            .modify(&key, |c| {
                let mut n = c.clone();
                n["spec"]["template"] = template(v);
                n["metadata"]["generation"] = json!(i + 1);
                Some(n)
            })
            .await
            .unwrap();
        settle(&w, t, true).await;
    }
    let rss = pods::list(&w.store, "replicasets", "default")
        .await
        .unwrap();
    let live: Vec<&Value> = rss.iter().filter(|r| !pods::deleting(r)).collect();
    assert_eq!(live.len(), 2, "the current one and one old: {live:?}");
    let hashes: Vec<&str> = live
        .iter()
        .map(|r| {
            pods::labels(r)
                .get(deployment::HASH_LABEL)
                .cloned()
                .unwrap()
        })
        .map(|h| {
            if h == deployment::template_hash(&template("v4")) {
                "v4"
            } else if h == deployment::template_hash(&template("v3")) {
                "v3"
            } else {
                "other"
            }
        })
        .collect();
    assert!(
        hashes.contains(&"v4") && hashes.contains(&"v3"),
        "{hashes:?}"
    );
}

impl World {
    /// Ends every active pod with `phase`, as an agent reporting its exit.
    async fn finish_active(&self, phase: &str) {
        for p in self.pods().await.iter().filter(|p| pods::is_active(p)) {
            let key = store::key("pods", Some("default"), pods::name(p));
            self.store
                .modify(&key, |cur| {
                    let mut n = cur.clone();
                    n["status"] = json!({"phase": phase});
                    Some(n)
                })
                .await
                .unwrap();
        }
    }

    async fn job_pass(&self, now: SystemTime) {
        super::job::pass(&self.store, &self.rec, now).await.unwrap();
    }
}

fn job_template() -> Value {
    json!({"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "m", "image": "hello:v1"}]}})
}

#[tokio::test]
async fn job_runs_parallelism_pods_until_completions_then_expires() {
    let w = World::new().await;
    let job = w
        .create(
            "jobs",
            json!({"metadata": {"name": "batch"}, "spec": {
            "completions": 3, "parallelism": 2, "ttlSecondsAfterFinished": 30,
            "template": job_template()}}),
        )
        .await;
    let t0 = SystemTime::now();
    w.job_pass(t0).await;
    let ps = w.pods().await;
    assert_eq!(ps.len(), 2);
    for p in &ps {
        assert_eq!(pods::labels(p)["job-name"], "batch");
        assert_eq!(pods::labels(p)["controller-uid"], pods::uid(&job));
        assert_eq!(p["spec"]["restartPolicy"], "Never");
    }
    w.finish_active("Succeeded").await;
    w.job_pass(t0).await;
    // One completion left: one pod more, not two.
    assert_eq!(
        w.pods().await.iter().filter(|p| pods::is_active(p)).count(),
        1
    );
    w.finish_active("Succeeded").await;
    w.job_pass(t0).await;
    let j = w.get("jobs", "batch").await;
    assert_eq!(
        (
            j["status"]["succeeded"].as_i64(),
            j["status"]["active"].as_i64()
        ),
        (Some(3), Some(0))
    );
    let complete = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Complete")
        .unwrap();
    assert_eq!(complete["status"], "True");
    assert!(j["status"]["completionTime"].is_string());
    assert_eq!(w.pods().await.len(), 3, "finished pods are kept");
    // Past ttlSecondsAfterFinished the Job goes.
    w.job_pass(t0 + Duration::from_secs(10)).await;
    assert!(
        w.store
            .get(&store::key("jobs", Some("default"), "batch"))
            .await
            .unwrap()
            .is_some()
    );
    w.job_pass(t0 + Duration::from_secs(31)).await;
    assert!(
        w.store
            .get(&store::key("jobs", Some("default"), "batch"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn job_fails_past_its_backoff_limit() {
    let w = World::new().await;
    w.create(
        "jobs",
        json!({"metadata": {"name": "flaky"}, "spec": {
        "backoffLimit": 1, "template": job_template()}}),
    )
    .await;
    let t0 = SystemTime::now();
    for _ in 0..2 {
        w.job_pass(t0).await;
        w.finish_active("Failed").await;
    }
    w.job_pass(t0).await;
    let j = w.get("jobs", "flaky").await;
    assert_eq!(j["status"]["failed"], 2);
    let failed = j["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    w.job_pass(t0).await;
    assert_eq!(w.pods().await.len(), 2, "no pod after the Job failed");
}

#[tokio::test]
async fn cronjob_runs_on_schedule_forbids_overlap_and_keeps_history() {
    let w = World::new().await;
    let cj = w
        .create(
            "cronjobs",
            json!({"metadata": {"name": "tick"}, "spec": {
            "schedule": "*/5 * * * *", "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "jobTemplate": {"spec": {"template": job_template()}}}}),
        )
        .await;
    let created = pods::time_at(&cj, "/metadata/creationTimestamp").unwrap();
    let pass = |now: SystemTime| {
        let (store, rec) = (w.store.clone(), w.rec.clone());
        async move { super::cronjob::pass(&store, &rec, now).await.unwrap() }
    };
    let jobs = || async { pods::list(&w.store, "jobs", "default").await.unwrap() };
    let next = pass(created).await.expect("a next time");
    assert!(jobs().await.is_empty(), "nothing before the first slot");
    pass(next).await;
    pass(next).await;
    let js = jobs().await;
    assert_eq!(js.len(), 1, "one Job per slot, however many passes");
    assert_eq!(pods::controller_uid(&js[0]), Some(pods::uid(&cj)));
    assert_eq!(
        pods::annotation(&js[0], super::cronjob::SCHEDULED_AT),
        Some(pods::rfc3339(next).as_str())
    );
    let st = w.get("cronjobs", "tick").await["status"].clone();
    assert_eq!(st["active"][0]["name"], pods::name(&js[0]));
    // Forbid: the next slot passes while the first Job runs.
    let later = next + Duration::from_secs(300);
    pass(later).await;
    assert_eq!(jobs().await.len(), 1);
    // Once it completes, the due slot runs; history keeps one success.
    for j in jobs().await {
        w.job_pass(later).await;
        w.finish_active("Succeeded").await;
        w.job_pass(later).await;
        assert!(w.get("jobs", pods::name(&j)).await["status"]["completionTime"].is_string());
    }
    pass(later).await;
    assert_eq!(jobs().await.len(), 2);
    w.job_pass(later).await;
    w.finish_active("Succeeded").await;
    w.job_pass(later).await;
    pass(later).await;
    let left: Vec<Value> = jobs()
        .await
        .into_iter()
        .filter(|j| !pods::deleting(j))
        .collect();
    assert_eq!(left.len(), 1, "successfulJobsHistoryLimit 1: {left:?}");
    assert!(w.get("cronjobs", "tick").await["status"]["lastSuccessfulTime"].is_string());
}

impl World {
    async fn node(&self, name: &str, ready: bool, labels: Value) {
        let rt = ResourceType::lookup("nodes").unwrap();
        let status = if ready { "True" } else { "Unknown" };
        let node = json!({"metadata": {"name": name, "labels": labels},
            "status": {"conditions": [{"type": "Ready", "status": status}]}});
        let key = store::key("nodes", None, name);
        if self.store.get(&key).await.unwrap().is_some() {
            self.store
                .modify(&key, |c| {
                    let mut n = c.clone();
                    n["status"] = node["status"].clone();
                    Some(n)
                })
                .await
                .unwrap();
        } else {
            crate::api::create_object(&self.store, rt, None, node.clone())
                .await
                .unwrap();
        }
    }

    /// A DaemonSet pass after a node lifecycle pass, as the controller
    /// loop runs them (taints follow Ready and cordon first).
    async fn ds_pass(&self, now: SystemTime) {
        super::nodes::pass(&self.store, &self.rec, now)
            .await
            .unwrap();
        super::daemonset::pass(&self.store, &self.rec, now)
            .await
            .unwrap();
    }

    fn nodes_of(ps: &[Value]) -> Vec<String> {
        let mut v: Vec<String> = ps
            .iter()
            .filter(|p| pods::is_active(p))
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    }
}

#[tokio::test]
async fn daemonset_puts_one_pod_per_matching_ready_node_and_keeps_it_when_unreachable() {
    let w = World::new().await;
    w.node("pi-1", true, json!({"site": "farm"})).await;
    w.node("pi-2", false, json!({"site": "farm"})).await;
    w.node("x86", true, json!({"site": "office"})).await;
    let mut t = template("v1");
    t["spec"]["nodeSelector"] = json!({"site": "farm"});
    w.create(
        "daemonsets",
        json!({"metadata": {"name": "agent"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": t}}),
    )
    .await;
    let now = SystemTime::now();
    w.ds_pass(now).await;
    w.ds_pass(now).await;
    assert_eq!(World::nodes_of(&w.pods().await), ["pi-1"]);
    // pi-2 comes up: it gets its pod, bound already.
    w.node("pi-2", true, json!({"site": "farm"})).await;
    w.ds_pass(now).await;
    assert_eq!(World::nodes_of(&w.pods().await), ["pi-1", "pi-2"]);
    // pi-1 loses its link: its pod stays.
    w.node("pi-1", false, json!({"site": "farm"})).await;
    w.ds_pass(now).await;
    assert_eq!(World::nodes_of(&w.pods().await), ["pi-1", "pi-2"]);
    let st = w.get("daemonsets", "agent").await["status"].clone();
    assert_eq!(st["desiredNumberScheduled"], 1);

    // Rolling update, one node at a time.
    w.node("pi-1", true, json!({"site": "farm"})).await;
    w.all_ready(now).await;
    let key = store::key("daemonsets", Some("default"), "agent");
    let mut t2 = template("v2");
    t2["spec"]["nodeSelector"] = json!({"site": "farm"});
    w.store
        .modify(&key, |c| {
            let mut n = c.clone();
            n["spec"]["template"] = t2.clone();
            Some(n)
        })
        .await
        .unwrap();
    w.ds_pass(now).await;
    let deleting = w.pods().await.iter().filter(|p| pods::deleting(p)).count();
    assert_eq!(deleting, 1, "maxUnavailable 1");
    for _ in 0..6 {
        w.stop_deleted().await;
        w.ds_pass(now).await;
        w.all_ready(now).await;
    }
    let ps = w.pods().await;
    assert_eq!(ps.len(), 2);
    assert!(
        ps.iter()
            .all(|p| p["spec"]["containers"][0]["env"][0]["value"] == "v2"),
        "{ps:?}"
    );
    let st = w.get("daemonsets", "agent").await["status"].clone();
    assert_eq!(
        (
            st["updatedNumberScheduled"].as_i64(),
            st["numberAvailable"].as_i64()
        ),
        (Some(2), Some(2))
    );
}

/// What the controllers write must decode strictly as its kind, or the next
/// client PUT (which re-admits the stored status) would be refused.
#[tokio::test]
async fn statuses_written_by_controllers_decode_as_their_kinds() {
    use spoke_api::apps::{DaemonSet, Deployment, ReplicaSet};
    use spoke_api::batch::{CronJob, Job};
    use spoke_api::validation::decode_strict;
    let w = World::new().await;
    w.node("pi-1", true, json!({})).await;
    w.create(
        "deployments",
        json!({"metadata": {"name": "web"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": template("v1")}}),
    )
    .await;
    w.create(
        "daemonsets",
        json!({"metadata": {"name": "ds"}, "spec": {
        "selector": {"matchLabels": {"app": "web"}}, "template": template("v1")}}),
    )
    .await;
    w.create(
        "jobs",
        json!({"metadata": {"name": "j"}, "spec": {"template": job_template()}}),
    )
    .await;
    w.create(
        "cronjobs",
        json!({"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *",
        "jobTemplate": {"spec": {"template": job_template()}}}}),
    )
    .await;
    let now = SystemTime::now() + Duration::from_secs(120);
    settle(&w, now, true).await;
    w.ds_pass(now).await;
    w.job_pass(now).await;
    super::cronjob::pass(&w.store, &w.rec, now).await.unwrap();
    w.finish_active("Succeeded").await;
    w.job_pass(now).await;
    fn check<T: serde::de::DeserializeOwned>(items: Vec<Value>) {
        assert!(!items.is_empty());
        for o in items {
            assert!(o.get("status").is_some(), "{o}");
            if let Err(e) = decode_strict::<T>(o.clone()) {
                panic!("{e:?}: {o}");
            }
        }
    }
    let list = |p: &'static str| {
        let store = w.store.clone();
        async move { pods::list(&store, p, "default").await.unwrap() }
    };
    check::<Deployment>(list("deployments").await);
    check::<ReplicaSet>(list("replicasets").await);
    check::<DaemonSet>(list("daemonsets").await);
    check::<Job>(list("jobs").await);
    check::<CronJob>(list("cronjobs").await);
}

#[tokio::test]
async fn a_paused_deployment_scales_but_does_not_roll() {
    let w = World::new().await;
    w.create(
        "deployments",
        json!({"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": template("v1")}}),
    )
    .await;
    let t = SystemTime::now();
    settle(&w, t, true).await;
    let key = store::key("deployments", Some("default"), "web");
    w.store
        .modify(&key, |c| {
            let mut n = c.clone();
            n["spec"]["paused"] = json!(true);
            n["spec"]["replicas"] = json!(4);
            n["spec"]["template"] = template("v2");
            n["metadata"]["generation"] = json!(2);
            Some(n)
        })
        .await
        .unwrap();
    settle(&w, t, true).await;
    let rss = pods::list(&w.store, "replicasets", "default")
        .await
        .unwrap();
    assert_eq!(rss.len(), 1, "no new ReplicaSet while paused");
    assert_eq!(rss[0]["spec"]["replicas"], 4);
    let d = w.get("deployments", "web").await;
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["reason"], "DeploymentPaused");
    // Resumed: the template change rolls out.
    w.store
        .modify(&key, |c| {
            let mut n = c.clone();
            n["spec"]["paused"] = json!(false);
            n["metadata"]["generation"] = json!(3);
            Some(n)
        })
        .await
        .unwrap();
    settle(&w, t, true).await;
    let rss = pods::list(&w.store, "replicasets", "default")
        .await
        .unwrap();
    assert_eq!(rss.len(), 2);
    let d = w.get("deployments", "web").await;
    assert_eq!(
        (
            d["status"]["updatedReplicas"].as_i64(),
            d["status"]["availableReplicas"].as_i64()
        ),
        (Some(4), Some(4))
    );
}

impl World {
    /// Changes a node's spec as a user (or `spoke cordon`) would.
    async fn node_spec(&self, name: &str, field: &str, value: Value) {
        self.store
            .modify(&store::key("nodes", None, name), |c| {
                let mut n = c.clone();
                n["spec"][field] = value.clone();
                Some(n)
            })
            .await
            .unwrap();
    }

    fn deleting_names(ps: &[Value]) -> Vec<String> {
        let mut v: Vec<String> = ps
            .iter()
            .filter(|p| pods::deleting(p))
            .map(|p| pods::name(p).to_string())
            .collect();
        v.sort();
        v
    }
}

#[tokio::test]
async fn daemonset_honours_affinity_and_tolerations_and_runs_on_cordoned_nodes() {
    let w = World::new().await;
    w.node("pi-1", true, json!({"site": "farm"})).await;
    w.node("pi-2", true, json!({"site": "farm"})).await;
    w.node("x86", true, json!({"site": "office"})).await;
    w.node("lab", true, json!({"site": "lab"})).await;
    w.node_spec(
        "pi-2",
        "taints",
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    )
    .await;
    w.node_spec("x86", "unschedulable", json!(true)).await;
    let affinity = |sites: Value| {
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "site", "operator": "In", "values": sites}]}]}}})
    };
    let mut plain = template("v1");
    plain["spec"]["affinity"] = affinity(json!(["farm", "office"]));
    let mut tolerant = template("v1");
    tolerant["metadata"]["labels"] = json!({"app": "gpu"});
    tolerant["spec"]["affinity"] = affinity(json!(["farm"]));
    tolerant["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Exists"}]);
    for (name, app, t) in [("plain", "web", plain), ("tolerant", "gpu", tolerant)] {
        w.create(
            "daemonsets",
            json!({"metadata": {"name": name}, "spec": {
                "selector": {"matchLabels": {"app": app}}, "template": t}}),
        )
        .await;
    }
    let now = SystemTime::now();
    w.ds_pass(now).await;
    let on = |ds: &str, ps: &[Value]| -> Vec<String> {
        let mine: Vec<Value> = ps
            .iter()
            .filter(|p| pods::name(p).starts_with(&format!("{ds}-")))
            .cloned()
            .collect();
        World::nodes_of(&mine)
    };
    let ps = w.pods().await;
    // The cordoned node gets its pod (the DaemonSet tolerates cordon, as in
    // Kubernetes); the tainted one only the tolerant DaemonSet's; "lab"
    // matches neither affinity.
    assert_eq!(on("plain", &ps), ["pi-1", "x86"]);
    assert_eq!(on("tolerant", &ps), ["pi-1", "pi-2"]);
    let p = ps
        .iter()
        .find(|p| pods::name(p).starts_with("plain-"))
        .unwrap();
    let tols = p["spec"]["tolerations"].as_array().unwrap();
    assert!(
        tols.iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"
                && t["effect"] == "NoExecute"
                && t.get("tolerationSeconds").is_none()),
        "DaemonSet pods tolerate unreachable nodes for ever: {tols:?}"
    );
    // A NoExecute taint nobody tolerates empties pi-1.
    w.node_spec(
        "pi-1",
        "taints",
        json!([{"key": "maintenance", "effect": "NoExecute"}]),
    )
    .await;
    w.ds_pass(now).await;
    let ps = w.pods().await;
    assert_eq!(on("plain", &ps), ["x86"]);
    assert_eq!(on("tolerant", &ps), ["pi-2"]);
}

#[tokio::test]
async fn an_unreachable_node_loses_replicated_pods_when_their_toleration_runs_out() {
    let w = World::new().await;
    w.node("pi-1", true, json!({})).await;
    let owned = |name: &str, kind: Option<&str>, seconds: Option<i64>| {
        let mut p = json!({"metadata": {"name": name},
            "spec": {"nodeName": "pi-1", "containers": [{"name": "m", "image": "hello:v1"}]}});
        if let Some(kind) = kind {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
                "name": "o", "uid": format!("uid-{name}"), "controller": true}]);
        }
        if let Some(s) = seconds {
            p["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable",
                "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": s}]);
        }
        p
    };
    for p in [
        owned("rs", Some("ReplicaSet"), Some(5)),
        owned("job", Some("Job"), None),
        owned("bare", None, Some(5)),
        owned("ds", Some("DaemonSet"), Some(5)),
    ] {
        w.create("pods", p).await;
    }
    let pass = |at: SystemTime| {
        let (store, rec) = (w.store.clone(), w.rec.clone());
        async move { super::nodes::pass(&store, &rec, at).await.unwrap() }
    };
    w.node("pi-1", false, json!({})).await;
    let t0 = SystemTime::now();
    let next = pass(t0).await.expect("a toleration runs out later");
    assert!(next > t0 && next <= t0 + Duration::from_secs(5), "{next:?}");
    let node = w
        .store
        .get(&store::key("nodes", None, "pi-1"))
        .await
        .unwrap()
        .unwrap();
    let keys: Vec<(&str, &str)> = node["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["key"].as_str().unwrap(), t["effect"].as_str().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("node.kubernetes.io/unreachable", "NoSchedule"),
            ("node.kubernetes.io/unreachable", "NoExecute")
        ]
    );
    pass(t0 + Duration::from_secs(3)).await;
    assert!(World::deleting_names(&w.pods().await).is_empty());
    pass(t0 + Duration::from_secs(6)).await;
    assert_eq!(World::deleting_names(&w.pods().await), ["rs"]);
    // The Job's pod got the default 300 s at admission.
    pass(t0 + Duration::from_secs(302)).await;
    assert_eq!(World::deleting_names(&w.pods().await), ["job", "rs"]);
    pass(t0 + Duration::from_secs(3600)).await;
    assert_eq!(World::deleting_names(&w.pods().await), ["job", "rs"]);
    // Back: the taints go; the evicted pods stay marked until the board
    // says they stopped.
    w.node("pi-1", true, json!({})).await;
    pass(t0 + Duration::from_secs(3601)).await;
    let node = w
        .store
        .get(&store::key("nodes", None, "pi-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(node["spec"].get("taints").is_none(), "{node}");
    assert_eq!(w.pods().await.len(), 4);
    // A node deleted for good frees its pods being deleted.
    w.store
        .delete(&store::key("nodes", None, "pi-1"), None)
        .await
        .unwrap();
    pass(t0 + Duration::from_secs(3602)).await;
    let mut left: Vec<String> = w
        .pods()
        .await
        .iter()
        .map(|p| pods::name(p).to_string())
        .collect();
    left.sort();
    assert_eq!(left, ["bare", "ds"]);
}

#[test]
fn node_writes_wake_controllers_only_when_what_they_read_changes() {
    use super::nodes::Facts;
    let event = |type_: store::EventType, object: Value| store::Event {
        type_,
        key: "nodes//pi-1".into(),
        revision: 1,
        object,
    };
    let node = json!({
        "metadata": {"name": "pi-1", "labels": {"a": "b"}, "annotations": {"spoke.dev/applied-revision": "1"}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": "t1"}],
                   "lease": {"renewTime": "t1"}, "sync": {"appliedRevision": 1}},
    });
    let mut facts = Facts::default();
    // First sight of a node: a change.
    assert!(facts.changed(&event(store::EventType::Added, node.clone())));
    // Revisions, leases and heartbeats: no change.
    let mut renewed = node.clone();
    renewed["metadata"]["annotations"]["spoke.dev/applied-revision"] = json!("2");
    renewed["status"]["sync"]["appliedRevision"] = json!(2);
    renewed["status"]["lease"]["renewTime"] = json!("t2");
    renewed["status"]["conditions"][0]["lastHeartbeatTime"] = json!("t2");
    assert!(!facts.changed(&event(store::EventType::Modified, renewed.clone())));
    // Readiness, labels, spec: a change each.
    let mut not_ready = renewed.clone();
    not_ready["status"]["conditions"][0]["status"] = json!("Unknown");
    assert!(facts.changed(&event(store::EventType::Modified, not_ready.clone())));
    let mut relabelled = not_ready.clone();
    relabelled["metadata"]["labels"]["a"] = json!("c");
    assert!(facts.changed(&event(store::EventType::Modified, relabelled.clone())));
    let mut cordoned = relabelled.clone();
    cordoned["spec"] = json!({"unschedulable": true});
    assert!(facts.changed(&event(store::EventType::Modified, cordoned.clone())));
    assert!(facts.changed(&event(store::EventType::Deleted, cordoned)));
    // Other kinds always count.
    let mut pod = event(store::EventType::Modified, json!({}));
    pod.key = "pods/default/a".into();
    assert!(facts.changed(&pod));
}
