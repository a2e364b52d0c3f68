//! Faults with real processes (issue 9): `kill -9` of an agent in the middle
//! of pod churn, again and again. (`kill -9` of the hub during acknowledged
//! writes is in `api.rs`; partitions through a proxy in `sync.rs` and
//! `nodes.rs`, on a real link cut by nftables in `netfaults.rs`.)
//!
//! `SPOKE_SOAK=1` runs the 100 kills; CI runs a few.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use spoke_e2e::{Hub, example_wasm, live_pods, tail};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn kills() -> u64 {
    if std::env::var_os("SPOKE_SOAK").is_some() {
        100
    } else {
        4
    }
}

/// A small deterministic generator (no dependency): the test's choices are
/// varied but the same in every run, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn started_at(p: &Value) -> Option<SystemTime> {
    let s = p["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].as_str()?;
    humantime::parse_rfc3339(s).ok()
}

#[tokio::test]
async fn agent_killed_during_pod_churn_converges_with_exactly_the_desired_pods() {
    let hub = Hub::start().await;
    let mut agent = hub.agent("edge-1", &[]);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    c.create(
        DEPLOYS,
        &json!({"metadata": {"name": "churn"}, "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "churn"}},
            "template": {"metadata": {"labels": {"app": "churn"}},
                         "spec": {"terminationGracePeriodSeconds": 1,
                                  "containers": [{"name": "main", "image": "hello:v1"}]}}}}),
    )
    .await
    .unwrap();

    let mut rng = Lcg(0x5eed);
    let mut last_kill = SystemTime::now();
    for round in 0..kills() {
        // Churn: a new replica count, and every other round a template
        // change that replaces every pod; the kill lands somewhere in it.
        let replicas = 1 + rng.below(5);
        let mut patch = json!({"spec": {"replicas": replicas}});
        if round % 2 == 1 {
            patch["spec"]["template"] =
                json!({"metadata": {"annotations": {"round": round.to_string()}}});
        }
        c.patch(
            &format!("{DEPLOYS}/churn"),
            "application/merge-patch+json",
            &patch,
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(800))).await;
        agent.proc.kill();
        // Kubernetes' times have whole seconds: compare at that resolution.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        last_kill = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        agent = hub.agent("edge-1", &[]);
    }

    // After the last kill: the Deployment's count, all Running, each started
    // by the agent process that runs now (a status from before the kill would
    // be stale: those instances died with the killed process), and no extra
    // pod anywhere.
    c.patch(
        &format!("{DEPLOYS}/churn"),
        "application/merge-patch+json",
        &json!({"spec": {"replicas": 3}}),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let pods = loop {
        let d: Value = c.get(&format!("{DEPLOYS}/churn")).await.unwrap();
        let st = &d["status"];
        let rolled = st["observedGeneration"] == d["metadata"]["generation"]
            && st["replicas"] == 3
            && st["updatedReplicas"] == 3
            && st["availableReplicas"] == 3;
        let pods = live_pods(&c, "app%3Dchurn").await;
        let fresh = pods.iter().all(|p| {
            p["status"]["phase"] == "Running" && started_at(p).is_some_and(|t| t >= last_kill)
        });
        if rolled && pods.len() == 3 && fresh {
            break pods;
        }
        if tokio::time::Instant::now() > deadline {
            let summary: Vec<String> = pods
                .iter()
                .map(|p| {
                    format!(
                        "{} {} {}",
                        p["metadata"]["name"],
                        p["status"]["phase"],
                        p["status"]["containerStatuses"][0]["state"]
                    )
                })
                .collect();
            panic!(
                "not converged: the rollout complete with exactly 3 Running pods started after the last kill\n\
                 deployment status: {st}\npods: {summary:#?}\n--- agent log ---\n{}\n--- hub log ---\n{}",
                tail(&agent.proc.output(), 60),
                tail(&hub.proc.output(), 40)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for p in &pods {
        assert_eq!(p["spec"]["nodeName"], "edge-1");
    }
    // Settled, not passing through: the same three pods a few seconds later,
    // and nothing terminating left behind.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list: Value = c
        .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dchurn")
        .await
        .unwrap();
    let all = list["items"].as_array().unwrap();
    let names = |v: &[Value]| -> Vec<String> {
        let mut n: Vec<String> = v
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(all),
        names(&pods),
        "pods left besides the 3 live ones\n--- agent log ---\n{}",
        tail(&agent.proc.output(), 40)
    );
    for p in all {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
    }
}
