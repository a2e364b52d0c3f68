//! The hub API as a separate process: what a client was told is stored
//! survives `kill -9` of the hub. (The semantics of each verb are tested
//! in-process in `hub/src/api/tests.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use spoke_e2e::Hub;

const CMS: &str = "/api/v1/namespaces/default/configmaps";

/// Kill cycles per write kind in CI; `SPOKE_SOAK=1` runs the 100.
fn cycles() -> usize {
    if std::env::var_os("SPOKE_SOAK").is_some() {
        100
    } else {
        3
    }
}

/// Streams writes from a background task until the hub dies; returns what
/// was acknowledged, in order.
async fn stream_until_killed<F, Fut>(hub: &mut Hub, write: F) -> Vec<u64>
where
    F: Fn(spoke_client::Client, u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let acked = Arc::new(Mutex::new(Vec::new()));
    let client = hub.client();
    let log = acked.clone();
    let task = tokio::spawn(async move {
        for i in 0.. {
            if !write(client.clone(), i).await {
                break;
            }
            log.lock().unwrap().push(i);
        }
    });
    // Let some writes land, then kill in the middle of the stream.
    for _ in 0..200 {
        if acked.lock().unwrap().len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hub.proc.kill();
    task.await.unwrap();
    hub.restart().await;
    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before the kill"
    );
    acked
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let mut hub = Hub::start().await;
    for cycle in 0..cycles() {
        // Creates: every acknowledged object is there, intact.
        let prefix = format!("c{cycle}-");
        let p = prefix.clone();
        let acked = stream_until_killed(&mut hub, move |c, i| {
            let p = p.clone();
            async move {
                let obj =
                    json!({"metadata": {"name": format!("{p}{i}")}, "data": {"i": i.to_string()}});
                c.create(CMS, &obj).await.is_ok()
            }
        })
        .await;
        let client = hub.client();
        for i in &acked {
            let got: Value = client
                .get(&format!("{CMS}/{prefix}{i}"))
                .await
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged create {i} lost: {e}"));
            assert_eq!(got["data"]["i"], i.to_string());
        }

        // Updates of one object: what is stored is the last acknowledged
        // value or the one in flight when the hub died, never older.
        let name = format!("u{cycle}");
        client
            .create(
                CMS,
                &json!({"metadata": {"name": name}, "data": {"v": "start"}}),
            )
            .await
            .unwrap();
        let n = name.clone();
        let acked = stream_until_killed(&mut hub, move |c, i| {
            let n = n.clone();
            async move {
                let path = format!("{CMS}/{n}");
                let Ok(mut cur) = c.get::<Value>(&path).await else {
                    return false;
                };
                cur["data"]["v"] = json!(i.to_string());
                c.replace(&path, &cur).await.is_ok()
            }
        })
        .await;
        let client = hub.client();
        let got: Value = client.get(&format!("{CMS}/{name}")).await.unwrap();
        let stored: u64 = got["data"]["v"].as_str().unwrap().parse().unwrap();
        let last = *acked.last().unwrap();
        assert!(
            stored == last || stored == last + 1,
            "cycle {cycle}: stored v={stored}, last acknowledged {last}"
        );

        // Deletes: every acknowledged delete stays deleted.
        let del_prefix = format!("d{cycle}-");
        for i in 0..200 {
            client
                .create(
                    CMS,
                    &json!({"metadata": {"name": format!("{del_prefix}{i}")}}),
                )
                .await
                .unwrap();
        }
        let p = del_prefix.clone();
        let acked = stream_until_killed(&mut hub, move |c, i| {
            let p = p.clone();
            async move { i < 200 && c.delete(&format!("{CMS}/{p}{i}"), None).await.is_ok() }
        })
        .await;
        let client = hub.client();
        for i in &acked {
            assert!(
                client
                    .get::<Value>(&format!("{CMS}/{del_prefix}{i}"))
                    .await
                    .is_err(),
                "cycle {cycle}: acknowledged delete {i} came back"
            );
        }
    }
}
