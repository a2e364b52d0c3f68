//! Faults with real processes (issue 9): `kill -9` of an agent in the middle
//! of pod churn, again and again; `kill -9` of the Mosquitto that several
//! agents share, while their desired state changes; the agent's data dir
//! filling up (a small tmpfs; needs root). (`kill -9` of the hub during
//! acknowledged writes is in `api.rs`; partitions through a proxy in
//! `sync.rs` and `nodes.rs`, on a real link cut by nftables in
//! `netfaults.rs`.)
//!
//! `SPOKE_SOAK=1` runs the 100 kills and longer broker restarts;
//! CI runs a few.

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use spoke_client::Client;
use spoke_e2e::{Agent, Hub, Lcg, Tmpfs, container, eventually, example_wasm, live_pods, tail};

const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

fn soak() -> bool {
    std::env::var_os("SPOKE_SOAK").is_some()
}

fn kills() -> u64 {
    if soak() { 100 } else { 4 }
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

const PODS: &str = "/api/v1/namespaces/default/pods";

/// A pod running `hello` (a line a second, forever) bound to `node`.
fn pod_on(name: &str, node: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "nodeName": node,
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "hello:v1"}]}})
}

async fn get(c: &Client, path: &str) -> Option<Value> {
    c.get(path).await.ok()
}

/// The node's `status.sync`, when the agent has acknowledged the hub's
/// revision: `Some(revision)`.
fn in_sync(node: &Value) -> Option<u64> {
    let sync = &node["status"]["sync"];
    let applied = sync["appliedRevision"].as_u64()?;
    (applied > 0 && Some(applied) == sync["desiredRevision"].as_u64()).then_some(applied)
}

/// (startedAt, restartCount) of a running pod's container: an instance.
fn instance(pod: &Value) -> (Value, Value) {
    let c = container(pod);
    (
        c["state"]["running"]["startedAt"].clone(),
        c["restartCount"].clone(),
    )
}

/// How many times an agent's log says it connected (one ConnAck each).
fn connects(agent: &Agent) -> usize {
    agent
        .proc
        .output()
        .matches("connected to the hub applied_revision")
        .count()
}

/// Several agents on one Mosquitto, which is killed (`kill -9`) and started
/// again on the same port a few times; between the kill and the start,
/// every node's desired state changes (a pod deleted, one created). After
/// each restart: every agent is back and in sync (status.sync), the changes
/// made during the outage run, the pods that were running before are the
/// same instances (a broker restart restarts no pod), and each agent
/// connected exactly once to the new broker, with no client-id takeover
/// (Mosquitto logs "already connected, closing old connection" for one).
#[tokio::test]
async fn broker_restarts_bring_every_agent_back_in_sync_without_restarting_pods() {
    let started = std::time::Instant::now();
    let (agents_n, restarts) = if soak() { (12, 20) } else { (4, 3) };
    let (hub, mut broker) = Hub::start_with_mosquitto(false).await;
    let names: Vec<String> = (1..=agents_n).map(|i| format!("edge-{i}")).collect();
    let agents: Vec<Agent> = names.iter().map(|n| hub.agent(n, &[])).collect();
    for n in &names {
        hub.wait_node_ready(n).await;
    }
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    for n in &names {
        c.create(PODS, &pod_on(&format!("keep-{n}"), n))
            .await
            .unwrap();
        c.create(PODS, &pod_on(&format!("r0-{n}"), n))
            .await
            .unwrap();
    }
    let mut keep = Vec::new();
    for n in &names {
        let p = hub
            .wait_pod(&format!("keep-{n}"), "Running", |p| {
                p["status"]["phase"] == "Running"
            })
            .await;
        keep.push(instance(&p));
        hub.wait_pod(&format!("r0-{n}"), "Running", |p| {
            p["status"]["phase"] == "Running"
        })
        .await;
    }
    let mut expected: Vec<usize> = agents.iter().map(connects).collect();

    for round in 1..=restarts {
        broker.stop();
        // The outage: every node's desired state changes while no agent
        // (and not the hub either) can be told.
        for n in &names {
            c.delete(&format!("{PODS}/r{}-{n}", round - 1), None)
                .await
                .unwrap();
            c.create(PODS, &pod_on(&format!("r{round}-{n}"), n))
                .await
                .unwrap();
        }
        broker.restart().await;
        for e in &mut expected {
            *e += 1;
        }

        // Back in sync, with this round's pods running and the last
        // round's gone.
        for (i, n) in names.iter().enumerate() {
            let what = format!("round {round}: {n} back in sync with its new pod running");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
            loop {
                let node = get(&c, &format!("/api/v1/nodes/{n}")).await;
                let synced = node.as_ref().and_then(in_sync).is_some();
                let new = get(&c, &format!("{PODS}/r{round}-{n}")).await;
                let running = new.is_some_and(|p| p["status"]["phase"] == "Running");
                let old_gone = get(&c, &format!("{PODS}/r{}-{n}", round - 1))
                    .await
                    .is_none();
                if synced && running && old_gone {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "timed out waiting for {what} (synced {synced}, running {running}, old gone {old_gone})\n\
                         node: {}\n--- agent log ---\n{}\n--- mosquitto log ---\n{}\n--- hub log ---\n{}",
                        node.map(|n| n["status"].to_string()).unwrap_or_default(),
                        tail(&agents[i].proc.output(), 30),
                        tail(&broker.proc.output(), 30),
                        tail(&hub.proc.output(), 30)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // One connection per agent to the new broker: not a loop of
        // reconnects that take each other's session over. (A settle of a
        // few keepalive-free seconds lets a loop show.)
        tokio::time::sleep(Duration::from_secs(2)).await;
        let log = broker.proc.output();
        assert!(
            !log.contains("already connected, closing old connection"),
            "round {round}: a client id was taken over\n{}",
            tail(&log, 40)
        );
        for (i, n) in names.iter().enumerate() {
            assert_eq!(
                connects(&agents[i]),
                expected[i],
                "round {round}: {n} should have connected once per broker start\n--- agent log ---\n{}",
                tail(&agents[i].proc.output(), 30)
            );
            let seen = log.matches(&format!("u'{n}'")).count();
            assert_eq!(
                seen,
                1,
                "round {round}: Mosquitto saw {n} connect {seen} times\n{}",
                tail(&log, 40)
            );
        }
        // The pods that ran before the restart are the same instances.
        for (i, n) in names.iter().enumerate() {
            let p = get(&c, &format!("{PODS}/keep-{n}")).await.unwrap();
            assert_eq!(p["status"]["phase"], "Running", "{p}");
            assert_eq!(
                instance(&p),
                keep[i],
                "round {round}: the broker restart restarted keep-{n}"
            );
        }
    }
    eprintln!(
        "{agents_n} agents, {restarts} broker restarts: {:.1}s",
        started.elapsed().as_secs_f64()
    );
}

/// Fills the file system holding `dir` with `dir/ballast` until a write
/// fails with ENOSPC; returns the bytes written.
fn fill(dir: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("ballast")).expect("create the ballast");
    let chunk = vec![0xa5u8; 1 << 20];
    let mut total = 0u64;
    for size in [1 << 20, 4096, 1] {
        loop {
            match f.write(&chunk[..size]) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("writing the ballast: {e}"),
            }
        }
    }
    total
}

fn condition(node: &Value, type_: &str) -> Option<String> {
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
        .map(str::to_string)
}

async fn wait_condition(hub: &Hub, agent: &Agent, type_: &str, status: &str) {
    let c = hub.client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let node = get(&c, "/api/v1/nodes/edge-1").await;
        if node.as_ref().and_then(|n| condition(n, type_)).as_deref() == Some(status) {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {type_}={status}\nnode: {}\n--- agent log ---\n{}",
                node.map(|n| n["status"].to_string()).unwrap_or_default(),
                tail(&agent.proc.output(), 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// CPU time (user + system) of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    field(11) + field(12)
}

/// The counts `hello` printed (`count=N`) in a pod log file, in order;
/// panics on a line that is not whole (`<RFC 3339 time> <stream> <text>`).
fn hello_counts(path: &std::path::Path) -> Vec<u64> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut counts = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let stamp = parts.next().unwrap_or("");
        let stream = parts.next().unwrap_or("");
        assert!(
            humantime::parse_rfc3339(stamp).is_ok()
                && ["stdout", "stderr", "instance"].contains(&stream),
            "a torn or garbled line in {}: {line:?}",
            path.display()
        );
        if let Some(n) = line.rsplit_once("count=").and_then(|(_, n)| n.parse().ok()) {
            counts.push(n);
        }
    }
    counts
}

/// The agent's data dir is a small tmpfs that a ballast file fills up.
/// While it is full, the agent keeps its pods running (the guest keeps
/// counting: its lines are dropped, not blocked on), reports DiskPressure,
/// does not spin or panic, and logs each failure once per episode; a pod
/// deleted meanwhile goes once space returns (the agent asks the hub again
/// for what it could not persist). With space back, DiskPressure clears
/// after the transition period, a new pod starts and logs are written
/// again. Then the disk is filled again and the agent killed (`kill -9`):
/// with space freed, its redb opens, it brings its pods back from local
/// state, and every pod log line reads back whole.
#[tokio::test]
async fn a_full_data_dir_keeps_pods_running_reports_disk_pressure_and_recovers() {
    let started = std::time::Instant::now();
    let hub = Hub::start().await;
    let data = hub.dir.path().join("agent-edge-1");
    let disk = Tmpfs::mount(&data, "24m");
    let args = [
        "--eviction-hard",
        "nodefs.available<6Mi",
        "--eviction-pressure-transition-period",
        "5s",
    ];
    let agent = hub.agent("edge-1", &args);
    hub.wait_node_ready("edge-1").await;
    hub.push(&example_wasm("hello"), "hello:v1");
    let c = hub.client();
    // steady prints a long line a second, so that its log meets the full
    // disk within seconds (the last page of a file has room for a few
    // short lines).
    let mut chatty = pod_on("steady", "edge-1");
    chatty["spec"]["containers"][0]["env"] =
        json!([{"name": "GREETING", "value": "x".repeat(1500)}]);
    c.create(PODS, &chatty).await.unwrap();
    c.create(PODS, &pod_on("doomed", "edge-1")).await.unwrap();
    let running = |p: &Value| p["status"]["phase"] == "Running";
    let steady = instance(&hub.wait_pod("steady", "Running", running).await);
    hub.wait_pod("doomed", "Running", running).await;
    wait_condition(&hub, &agent, "DiskPressure", "False").await;
    let steady_log = data.join("logs/default_steady.log");
    let before = eventually(Duration::from_secs(30), "steady to log a few lines", || {
        let counts = hello_counts(&steady_log);
        async move { (counts.len() >= 3).then(|| *counts.last().unwrap()) }
    })
    .await;

    // Full.
    let ballast = fill(&data);
    eprintln!("ballast: {} KiB", ballast / 1024);
    wait_condition(&hub, &agent, "DiskPressure", "True").await;
    c.delete(&format!("{PODS}/doomed"), None).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "steady's log to meet the full disk",
        || {
            let met = agent.proc.output().contains("cannot write pod log");
            async move { met.then_some(()) }
        },
    )
    .await;
    let (ticks0, t0) = (cpu_ticks(agent.proc.pid()), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(6)).await;
    let cpu = (cpu_ticks(agent.proc.pid()) - ticks0) as f64 / 100.0 / t0.elapsed().as_secs_f64();
    eprintln!(
        "agent CPU while the disk is full: {:.1}% of a core",
        cpu * 100.0
    );
    // A spinning retry loop would take a whole core; idle is about 1%.
    assert!(
        cpu < 0.5,
        "the agent spins while the disk is full: {cpu:.2} of a core"
    );
    let p = get(&c, &format!("{PODS}/steady")).await.unwrap();
    assert_eq!(p["status"]["phase"], "Running", "{p}");
    assert_eq!(instance(&p), steady, "a full disk restarted steady");
    let log = agent.proc.output();
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
    // Once per episode and pod log, not once per line or flush.
    let log_errors = log.matches("cannot write pod log").count();
    assert!(
        (1..=2).contains(&log_errors),
        "{log_errors} pod log errors\n{}",
        tail(&log, 40)
    );
    for once in [
        "cannot persist the desired state:",
        "local state database failed",
    ] {
        assert!(log.matches(once).count() <= 1, "{once}\n{}", tail(&log, 40));
    }

    // Space returns.
    std::fs::remove_file(data.join("ballast")).unwrap();
    wait_condition(&hub, &agent, "DiskPressure", "False").await;
    eventually(Duration::from_secs(60), "doomed to be deleted", || {
        let c = c.clone();
        async move {
            get(&c, &format!("{PODS}/doomed"))
                .await
                .is_none()
                .then_some(())
        }
    })
    .await;
    c.create(PODS, &pod_on("fresh", "edge-1")).await.unwrap();
    hub.wait_pod("fresh", "Running", running).await;
    let counts = eventually(Duration::from_secs(30), "steady to log again", || {
        let counts = hello_counts(&steady_log);
        async move { (counts.last().is_some_and(|&n| n > before + 1)).then_some(counts) }
    })
    .await;
    // One instance counting on throughout (no restart, no reset), with a
    // gap where its lines met the full disk.
    assert!(counts.windows(2).all(|w| w[1] > w[0]), "{counts:?}");
    assert!(
        counts.windows(2).any(|w| w[1] > w[0] + 1),
        "no line was dropped while the disk was full: {counts:?}"
    );
    let p = get(&c, &format!("{PODS}/steady")).await.unwrap();
    assert_eq!(instance(&p), steady, "steady restarted");
    let log = agent.proc.output();
    assert!(
        log.contains("pod log is written again"),
        "{}",
        tail(&log, 40)
    );
    let node = get(&c, "/api/v1/nodes/edge-1").await.unwrap();
    eprintln!(
        "phase 1 done after {:.1}s; node sync {}",
        started.elapsed().as_secs_f64(),
        node["status"]["sync"]
    );

    // Full again, a change the agent cannot persist, and a crash.
    fill(&data);
    c.delete(&format!("{PODS}/fresh"), None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut agent = agent;
    let before_kill = agent.proc.output();
    assert!(
        !before_kill.contains("panicked"),
        "{}",
        tail(&before_kill, 40)
    );
    agent.proc.kill();
    std::fs::remove_file(data.join("ballast")).unwrap();
    let agent = hub.agent("edge-1", &args);
    let restored = eventually(
        Duration::from_secs(30),
        "the agent to restore its pods",
        || {
            let log = agent.proc.output();
            async move {
                let line = log
                    .lines()
                    .find(|l| l.contains("restored from local state"))?
                    .to_string();
                Some(line)
            }
        },
    )
    .await;
    assert!(
        restored.contains("1 pod(s)") || restored.contains("2 pod(s)"),
        "{restored}\n--- before the kill ---\n{}",
        tail(&before_kill, 30)
    );
    eprintln!(
        "after the kill while full: {} (torn log lines cut off: {})",
        restored.split("started: ").nth(1).unwrap_or(&restored),
        agent.proc.output().matches("cut off a torn line").count()
    );
    eventually(
        Duration::from_secs(60),
        "fresh deleted and edge-1 in sync",
        || {
            let c = c.clone();
            async move {
                let gone = get(&c, &format!("{PODS}/fresh")).await.is_none();
                let node = get(&c, "/api/v1/nodes/edge-1").await?;
                (gone && in_sync(&node).is_some()).then_some(())
            }
        },
    )
    .await;
    hub.wait_pod("steady", "Running again", |p| {
        running(p) && instance(p) != steady
    })
    .await;
    let logged = counts.len();
    eventually(
        Duration::from_secs(30),
        "steady to log after the restart",
        || {
            let n = hello_counts(&steady_log).len();
            async move { (n > logged).then_some(()) }
        },
    )
    .await;
    hello_counts(&steady_log);
    let log = agent.proc.output();
    assert!(!log.contains("panicked"), "{}", tail(&log, 40));
    drop(agent);
    drop(disk);
    eprintln!("disk full test: {:.1}s", started.elapsed().as_secs_f64());
}
