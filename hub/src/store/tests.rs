use serde_json::json;

use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(&dir.path().join("store.redb")).unwrap();
    (dir, Store::new(backend))
}

fn obj(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"x": 1}})
}

#[tokio::test]
async fn every_write_bumps_the_revision_and_sets_resource_version() {
    let (_dir, store) = open();
    let a = store.create("pods/default/a", obj("a")).await.unwrap();
    let b = store.create("pods/default/b", obj("b")).await.unwrap();
    assert_eq!(revision_of(&a), Some(1));
    assert_eq!(revision_of(&b), Some(2));
    assert_eq!(store.revision().await.unwrap(), 2);
    let (items, rev) = store.list(&prefix("pods", Some("default"))).await.unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(rev, 2);
}

#[tokio::test]
async fn create_refuses_an_existing_key() {
    let (_dir, store) = open();
    store.create("k", obj("a")).await.unwrap();
    assert!(matches!(
        store.create("k", obj("a")).await,
        Err(Error::AlreadyExists)
    ));
}

#[tokio::test]
async fn update_is_compare_and_swap() {
    let (_dir, store) = open();
    let a = store.create("k", obj("a")).await.unwrap();
    let rv = revision_of(&a);
    store.update("k", obj("a"), rv).await.unwrap();
    // The second writer with the same (now stale) revision loses.
    assert!(matches!(
        store.update("k", obj("a"), rv).await,
        Err(Error::Conflict)
    ));
    assert!(matches!(
        store.update("missing", obj("a"), None).await,
        Err(Error::NotFound)
    ));
}

#[tokio::test]
async fn subscribers_see_each_write_once_in_order() {
    let (_dir, store) = open();
    let mut events = store.subscribe();
    store.create("k", obj("a")).await.unwrap();
    store.update("k", obj("a"), None).await.unwrap();
    store.delete("k", None).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = events.recv().await.unwrap();
        seen.push((e.type_, e.revision));
    }
    assert_eq!(
        seen,
        [
            (EventType::Added, 1),
            (EventType::Modified, 2),
            (EventType::Deleted, 3)
        ]
    );
    assert!(events.try_recv().is_err());
}

#[tokio::test]
async fn list_stays_inside_its_prefix() {
    let (_dir, store) = open();
    store
        .create(&key("pods", Some("a"), "x"), obj("x"))
        .await
        .unwrap();
    store
        .create(&key("pods", Some("ab"), "y"), obj("y"))
        .await
        .unwrap();
    store
        .create(&key("nodes", None, "n"), obj("n"))
        .await
        .unwrap();
    assert_eq!(
        store
            .list(&prefix("pods", Some("a")))
            .await
            .unwrap()
            .0
            .len(),
        1
    );
    assert_eq!(store.list(&prefix("pods", None)).await.unwrap().0.len(), 2);
    assert_eq!(store.list(&prefix("nodes", None)).await.unwrap().0.len(), 1);
}

#[tokio::test]
async fn objects_survive_reopening_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store = Store::new(RedbBackend::open(&path).unwrap());
        store.create("k", obj("a")).await.unwrap();
    }
    let store = Store::new(RedbBackend::open(&path).unwrap());
    let back = store.get("k").await.unwrap().unwrap();
    assert_eq!(back["metadata"]["name"], "a");
    assert_eq!(store.revision().await.unwrap(), 1);
}

#[tokio::test]
async fn modify_retries_until_it_wins() {
    let (_dir, store) = open();
    store
        .create("k", json!({"metadata": {}, "n": 0}))
        .await
        .unwrap();
    let s2 = store.clone();
    let mut first = true;
    let out = store
        .modify("k", |cur| {
            if first {
                first = false;
                // A concurrent writer sneaks in between read and write.
                let s3 = s2.clone();
                let cur2 = cur.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new()
                        .unwrap()
                        .block_on(s3.update("k", cur2, None))
                        .unwrap();
                })
                .join()
                .unwrap();
            }
            let mut next = cur.clone();
            next["n"] = json!(cur["n"].as_i64().unwrap() + 1);
            Some(next)
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out["n"], 1);
    assert_eq!(revision_of(&out), Some(3));
}

#[tokio::test]
async fn a_watch_resumes_from_any_revision_still_in_the_log() {
    let (_dir, store) = open();
    store.create("pods/default/a", obj("a")).await.unwrap();
    store.create("nodes//n", obj("n")).await.unwrap();
    store
        .update("pods/default/a", obj("a"), None)
        .await
        .unwrap();
    // From revision 1: the update of a at 3 (the node is outside the prefix).
    let mut w = store.watch("pods/", Some(1)).await.unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!((e.type_, e.revision), (EventType::Modified, 3));
    // Then live writes, once each.
    store.delete("pods/default/a", None).await.unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!((e.type_, e.revision), (EventType::Deleted, 4));
}

#[tokio::test]
async fn a_watch_without_revision_starts_with_the_current_objects() {
    let (_dir, store) = open();
    store.create("pods/default/a", obj("a")).await.unwrap();
    store.create("pods/default/b", obj("b")).await.unwrap();
    let mut w = store.watch("pods/", None).await.unwrap();
    let first = w.next().await.unwrap().unwrap();
    let second = w.next().await.unwrap().unwrap();
    assert_eq!(
        (first.type_, second.type_),
        (EventType::Added, EventType::Added)
    );
    assert_eq!(w.revision(), 2);
    store.create("pods/default/c", obj("c")).await.unwrap();
    assert_eq!(w.next().await.unwrap().unwrap().revision, 3);
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::new(RedbBackend::open_with_log(&dir.path().join("s.redb"), 3).unwrap());
    for i in 0..6 {
        store
            .create(&format!("pods/default/p{i}"), obj("p"))
            .await
            .unwrap();
    }
    // Revisions 4..=6 are kept: resuming after 3 works, after 2 does not.
    assert_eq!(store.changes_since(3).await.unwrap().len(), 3);
    assert!(matches!(
        store.watch("pods/", Some(2)).await,
        Err(Error::Gone {
            requested: 2,
            oldest: 4
        })
    ));
    assert!(store.changes_since(6).await.unwrap().is_empty());
}

#[tokio::test]
async fn the_change_log_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    {
        let store = Store::new(RedbBackend::open(&path).unwrap());
        store.create("pods/default/a", obj("a")).await.unwrap();
        store.delete("pods/default/a", None).await.unwrap();
    }
    let store = Store::new(RedbBackend::open(&path).unwrap());
    let events = store.changes_since(0).await.unwrap();
    let seen: Vec<_> = events.iter().map(|e| (e.type_, e.revision)).collect();
    assert_eq!(seen, [(EventType::Added, 1), (EventType::Deleted, 2)]);
}

#[test]
fn a_batch_applies_in_order_and_refused_writes_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = RedbBackend::open(&dir.path().join("s.redb")).unwrap();
    let k = || "configmaps/default/a".to_string();
    let results = backend
        .write_batch(vec![
            (k(), Write::Create(obj("a"))),
            (k(), Write::Create(obj("a"))),
            (
                k(),
                Write::Update {
                    object: obj("a"),
                    expected: Some(99),
                },
            ),
            (
                k(),
                Write::Update {
                    object: obj("a"),
                    expected: Some(1),
                },
            ),
            (k(), Write::Delete { expected: None }),
        ])
        .unwrap();
    let outcome: Vec<Result<u64, String>> = results
        .into_iter()
        .map(|r| r.map(|e| e.revision).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(
        outcome,
        vec![
            Ok(1),
            Err(Error::AlreadyExists.to_string()),
            Err(Error::Conflict.to_string()),
            Ok(2),
            Ok(3)
        ]
    );
    assert_eq!(backend.revision().unwrap(), 3);
    let log: Vec<u64> = backend
        .changes_since(0)
        .unwrap()
        .iter()
        .map(|e| e.revision)
        .collect();
    assert_eq!(log, [1, 2, 3]);
}

#[tokio::test]
async fn concurrent_writers_share_commits_and_stay_in_order() {
    let (_dir, store) = open();
    let mut events = store.subscribe();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .create(&format!("configmaps/default/c{i}"), obj(&format!("c{i}")))
                .await
                .unwrap()
        }));
    }
    let mut acked: Vec<u64> = Vec::new();
    for t in tasks {
        acked.push(revision_of(&t.await.unwrap()).unwrap());
    }
    acked.sort();
    assert_eq!(acked, (1..=64).collect::<Vec<u64>>());
    let mut seen = Vec::new();
    for _ in 0..64 {
        seen.push(events.recv().await.unwrap().revision);
    }
    assert_eq!(
        seen,
        (1..=64).collect::<Vec<u64>>(),
        "published in revision order"
    );
}
