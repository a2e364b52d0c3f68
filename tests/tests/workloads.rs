//! Workload controllers end to end: a hub, two real agents running the
//! hello module in wasmtime, and Deployments driven over the API as a user
//! (or `spoke rollout undo`) would.

use std::time::Duration;

use serde_json::{Value, json};
use spoke_client::Client;
use spoke_e2e::{Hub, eventually, example_wasm, tail};

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/web";

fn template(env: &[(&str, &str)]) -> Value {
    let env: Vec<Value> = env
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    // The hello guest does not watch its stdin (the stop signal), so each
    // pod it replaces would take the default 30 s grace period to stop.
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "main", "image": "hello:v1", "env": env}]}})
}

fn condition<'a>(d: &'a Value, type_: &str) -> &'a Value {
    d["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// Waits until `check` holds for the object at `path`; on timeout shows the
/// object and the hub's log.
async fn wait_for(hub: &Hub, path: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let client = hub.client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let obj: Option<Value> = client.get(path).await.ok();
        if let Some(o) = &obj
            && check(o)
        {
            return o.clone();
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {path}: {what}\nlast seen: {}\n--- hub log ---\n{}",
                obj.map(|o| o.to_string()).unwrap_or_default(),
                tail(&hub.proc.output(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The Deployment has rolled out completely at its current generation.
fn complete(d: &Value, replicas: i64) -> bool {
    let st = &d["status"];
    st["observedGeneration"] == d["metadata"]["generation"]
        && st["replicas"] == replicas
        && st["updatedReplicas"] == replicas
        && st["availableReplicas"] == replicas
        && condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
}

async fn replicasets(c: &Client) -> Vec<Value> {
    let list: Value = c
        .get("/apis/apps/v1/namespaces/default/replicasets")
        .await
        .unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

/// Live (not terminating) pods of the app.
async fn live_pods(c: &Client) -> Vec<Value> {
    spoke_e2e::live_pods(c, "app%3Dweb").await
}

fn env_of(p: &Value, name: &str) -> Option<String> {
    p["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
        .map(String::from)
}

fn rs_named<'a>(rss: &'a [Value], name: &str) -> &'a Value {
    rss.iter()
        .find(|r| r["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no replicaset {name} in {rss:?}"))
}

#[tokio::test]
async fn deployment_rolls_out_stalls_on_a_crashing_version_rolls_back_and_scales() {
    let hub = Hub::start().await;
    let _a1 = hub.agent("edge-1", &[]);
    let _a2 = hub.agent("edge-2", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.wait_node_ready("edge-2").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();

    // Three replicas across two boards.
    c.create(
        "/apis/apps/v1/namespaces/default/deployments",
        &json!({"metadata": {"name": "web"}, "spec": {
            "replicas": 3, "minReadySeconds": 2, "progressDeadlineSeconds": 15,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(&[("GREETING", "v1")])}}),
    )
    .await
    .unwrap();
    wait_for(&hub, DEPLOY, "3 available", |d| complete(d, 3)).await;
    let pods = live_pods(&c).await;
    assert_eq!(pods.len(), 3);
    let nodes: std::collections::BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    assert_eq!(nodes.len(), 2, "spread over both agents: {pods:?}");
    for p in &pods {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet");
        assert_eq!(owner["controller"], true);
    }
    let rss = replicasets(&c).await;
    assert_eq!(rss.len(), 1);
    let v1_rs = rss[0]["metadata"]["name"].as_str().unwrap().to_string();

    // Rolling update to a new template (env change).
    let mut d: Value = c.get(DEPLOY).await.unwrap();
    d["spec"]["template"] = template(&[("GREETING", "v2")]);
    c.replace(DEPLOY, &d).await.unwrap();
    let d = wait_for(&hub, DEPLOY, "v2 rolled out", |d| {
        d["metadata"]["generation"] == 2 && complete(d, 3)
    })
    .await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let pods = eventually(Duration::from_secs(60), "only v2 pods left", || async {
        let pods = live_pods(&c).await;
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| env_of(p, "GREETING").as_deref() == Some("v2")))
        .then_some(pods)
    })
    .await;
    let v2_rs = pods[0]["metadata"]["ownerReferences"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(v1_rs, v2_rs);
    assert_eq!(
        rs_named(&replicasets(&c).await, &v1_rs)["spec"]["replicas"],
        0
    );

    // A version that crash-loops: the rollout takes maxUnavailable (1) old
    // pod and the surge (1), then stops, and the deadline says so.
    let mut d: Value = c.get(DEPLOY).await.unwrap();
    d["spec"]["template"] = template(&[
        ("GREETING", "bad"),
        ("HELLO_LINES", "1"),
        ("HELLO_EXIT_CODE", "3"),
    ]);
    c.replace(DEPLOY, &d).await.unwrap();
    let d = wait_for(&hub, DEPLOY, "ProgressDeadlineExceeded", |d| {
        d["metadata"]["generation"] == 3
            && condition(d, "Progressing")["reason"] == "ProgressDeadlineExceeded"
    })
    .await;
    assert_eq!(condition(&d, "Progressing")["status"], "False");
    assert_eq!(d["status"]["availableReplicas"], 2, "{d}");
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d}");
    assert_eq!(condition(&d, "Available")["status"], "True");
    let rss = replicasets(&c).await;
    assert_eq!(rs_named(&rss, &v2_rs)["spec"]["replicas"], 2);
    let bad_rs = rss
        .iter()
        .map(|r| r["metadata"]["name"].as_str().unwrap())
        .find(|n| *n != v1_rs && *n != v2_rs)
        .unwrap()
        .to_string();
    assert_eq!(rs_named(&rss, &bad_rs)["spec"]["replicas"], 2);

    // Rollback as `rollout undo` does it: the previous ReplicaSet's
    // template, without its hash label, written back to the Deployment.
    let mut old_template = rs_named(&rss, &v2_rs)["spec"]["template"].clone();
    old_template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    let mut d: Value = c.get(DEPLOY).await.unwrap();
    d["spec"]["template"] = old_template;
    c.replace(DEPLOY, &d).await.unwrap();
    let d = wait_for(&hub, DEPLOY, "rolled back to v2", |d| {
        d["metadata"]["generation"] == 4 && complete(d, 3)
    })
    .await;
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );
    let rss = replicasets(&c).await;
    assert_eq!(rs_named(&rss, &v2_rs)["spec"]["replicas"], 3);
    assert_eq!(rs_named(&rss, &bad_rs)["spec"]["replicas"], 0);
    assert_eq!(
        rs_named(&rss, &v2_rs)["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "4"
    );

    // Scale up, then down.
    c.patch(
        DEPLOY,
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 5}}),
    )
    .await
    .unwrap();
    wait_for(&hub, DEPLOY, "5 available", |d| complete(d, 5)).await;
    c.patch(
        DEPLOY,
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 1}}),
    )
    .await
    .unwrap();
    wait_for(&hub, DEPLOY, "1 replica", |d| complete(d, 1)).await;
    eventually(Duration::from_secs(60), "one pod left", || async {
        let pods = live_pods(&c).await;
        (pods.len() == 1 && env_of(&pods[0], "GREETING").as_deref() == Some("v2")).then_some(())
    })
    .await;

    // Events a user would see in `describe`.
    let events: Value = c.get("/api/v1/namespaces/default/events").await.unwrap();
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    for want in ["ScalingReplicaSet", "SuccessfulCreate", "SuccessfulDelete"] {
        assert!(reasons.contains(&want), "no {want} in {reasons:?}");
    }
}

#[tokio::test]
async fn job_with_three_completions_two_at_a_time_finishes() {
    let hub = Hub::start().await;
    let _a1 = hub.agent("edge-1", &[]);
    let _a2 = hub.agent("edge-2", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.wait_node_ready("edge-2").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    c.create(
        "/apis/batch/v1/namespaces/default/jobs",
        &json!({"metadata": {"name": "batch"}, "spec": {
            "completions": 3, "parallelism": 2,
            "template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "hello:v1", "env": [{"name": "HELLO_LINES", "value": "2"}]}]}}}}),
    )
    .await
    .unwrap();
    let path = "/apis/batch/v1/namespaces/default/jobs/batch";
    let most_active = std::sync::atomic::AtomicI64::new(0);
    let job = wait_for(&hub, path, "Complete", |j| {
        let active = j["status"]["active"].as_i64().unwrap_or(0);
        most_active.fetch_max(active, std::sync::atomic::Ordering::Relaxed);
        condition(j, "Complete")["status"] == "True"
    })
    .await;
    assert_eq!(job["status"]["succeeded"], 3, "{job}");
    assert_eq!(job["status"]["failed"], 0, "{job}");
    assert!(most_active.into_inner() <= 2, "parallelism is 2");
    let list: Value = c
        .get("/api/v1/namespaces/default/pods?labelSelector=job-name%3Dbatch")
        .await
        .unwrap();
    let pods = list["items"].as_array().unwrap();
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(
        pods.iter().all(|p| p["status"]["phase"] == "Succeeded"),
        "{pods:?}"
    );
}

#[tokio::test]
async fn cronjob_fires_on_its_schedule_under_a_controlled_clock() {
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = clock_dir.path().join("now");
    // Before anything is created: no slot can be due yet.
    std::fs::write(&clock, "2000-01-01T00:00:00Z").unwrap();
    let hub = Hub::start_with_env(
        None,
        &[("SPOKE_HUB_FAKE_CLOCK_FILE", clock.to_str().unwrap())],
    )
    .await;
    let _a1 = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    // 09:00 at +02:00 is 07:00 UTC.
    c.create(
        "/apis/batch/v1/namespaces/default/cronjobs",
        &json!({"metadata": {"name": "tick"}, "spec": {
            "schedule": "0 9 * * *", "timeZone": "+02:00",
            "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                {"name": "main", "image": "hello:v1", "env": [{"name": "HELLO_LINES", "value": "1"}]}]}}}}}}),
    )
    .await
    .unwrap();
    let jobs = || async {
        let list: Value = c
            .get("/apis/batch/v1/namespaces/default/jobs")
            .await
            .unwrap();
        list["items"].as_array().cloned().unwrap_or_default()
    };
    // Slots count from the creation time (real time): the first one is the
    // next 07:00 UTC after it. Move the fake clock to just before, then past.
    let created: Value = c
        .get("/apis/batch/v1/namespaces/default/cronjobs/tick")
        .await
        .unwrap();
    let created =
        humantime::parse_rfc3339(created["metadata"]["creationTimestamp"].as_str().unwrap())
            .unwrap();
    let secs = created
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day = 86_400;
    let mut slot = secs / day * day + 7 * 3600;
    if slot <= secs {
        slot += day;
    }
    let slot_time = std::time::UNIX_EPOCH + Duration::from_secs(slot);
    std::fs::write(
        &clock,
        humantime::format_rfc3339_seconds(slot_time - Duration::from_secs(60)).to_string(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(jobs().await.is_empty(), "nothing before 09:00 +02:00");
    std::fs::write(
        &clock,
        humantime::format_rfc3339_seconds(slot_time + Duration::from_secs(5)).to_string(),
    )
    .unwrap();
    let cj = wait_for(
        &hub,
        "/apis/batch/v1/namespaces/default/cronjobs/tick",
        "a Job scheduled",
        |cj| cj["status"]["lastScheduleTime"].is_string(),
    )
    .await;
    assert_eq!(
        cj["status"]["lastScheduleTime"].as_str().unwrap(),
        humantime::format_rfc3339_seconds(slot_time).to_string()
    );
    let js = jobs().await;
    assert_eq!(js.len(), 1, "{js:?}");
    let name = js[0]["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(name, format!("tick-{}", slot / 60));
    // Its pod runs on the board and the Job completes.
    wait_for(
        &hub,
        &format!("/apis/batch/v1/namespaces/default/jobs/{name}"),
        "Complete",
        |j| condition(j, "Complete")["status"] == "True",
    )
    .await;
}

#[tokio::test]
async fn daemonset_lands_on_an_agent_that_joins_later_and_rolls_an_update() {
    let hub = Hub::start().await;
    let _a1 = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    let path = "/apis/apps/v1/namespaces/default/daemonsets/web";
    c.create(
        "/apis/apps/v1/namespaces/default/daemonsets",
        &json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(&[("GREETING", "v1")])}}),
    )
    .await
    .unwrap();
    let running_on = |pods: &[Value]| -> Vec<String> {
        let mut v: Vec<String> = pods
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from))
            .collect();
        v.sort();
        v
    };
    wait_for(&hub, path, "1 ready", |d| d["status"]["numberReady"] == 1).await;
    assert_eq!(running_on(&live_pods(&c).await), ["edge-1"]);

    // A board that joins later gets its pod.
    let _a2 = hub.agent("edge-2", &[]);
    hub.wait_node_ready("edge-2").await;
    wait_for(&hub, path, "2 ready", |d| {
        d["status"]["numberReady"] == 2 && d["status"]["desiredNumberScheduled"] == 2
    })
    .await;
    assert_eq!(running_on(&live_pods(&c).await), ["edge-1", "edge-2"]);

    // Rolling update of the template.
    let mut ds: Value = c.get(path).await.unwrap();
    ds["spec"]["template"] = template(&[("GREETING", "v2")]);
    c.replace(path, &ds).await.unwrap();
    eventually(Duration::from_secs(60), "v2 on both boards", || async {
        let pods = live_pods(&c).await;
        (pods.len() == 2
            && running_on(&pods) == ["edge-1", "edge-2"]
            && pods
                .iter()
                .all(|p| env_of(p, "GREETING").as_deref() == Some("v2")))
        .then_some(())
    })
    .await;
    wait_for(&hub, path, "2 updated and available", |d| {
        d["status"]["updatedNumberScheduled"] == 2 && d["status"]["numberAvailable"] == 2
    })
    .await;
}
