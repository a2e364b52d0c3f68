//! Node identity and isolation on the MQTT link: joining with a bootstrap
//! token, revocation by deleting the Node, and a node's credentials trying
//! every way into another node's topics, with the embedded broker and with
//! Mosquitto (using the files the hub writes).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use spoke_api::auth::{JOIN_PATH, JoinResponse};
use spoke_api::protocol::topic;
use spoke_e2e::{Hub, eventually};

/// An acknowledgement A forges in B's name.
const FORGED_ACK: &[u8] = br#"{"type":"ack","appliedRevision":999999}"#;

/// How long a refused or silent broker gets to answer one probe.
const PROBE: Duration = Duration::from_secs(5);

async fn join(hub: &Hub, node: &str) -> JoinResponse {
    let answer = hub
        .client_with(Some(&hub.bootstrap_token))
        .create(JOIN_PATH, &json!({"nodeName": node}))
        .await
        .expect("join");
    serde_json::from_value(answer).expect("a join answer")
}

/// MQTT options as a board would make them from its credentials, with any
/// client id, user name and password.
fn options(creds: &JoinResponse, client_id: &str, user: Option<&str>, pw: &str) -> MqttOptions {
    let mut conn = spoke_agent::sync::Connection::parse_url(&creds.broker_url).unwrap();
    conn.ca_pem = creds.ca_pem.clone();
    let mut o = MqttOptions::new(client_id, conn.host.clone(), conn.port);
    o.set_keep_alive(Duration::from_secs(30));
    if let Some(user) = user {
        o.set_credentials(user, pw);
    }
    spoke_agent::identity::set_tls(&mut o, &conn);
    o
}

/// Connects; `Err` says how the broker refused (or that it closed).
async fn connect(o: MqttOptions) -> Result<(AsyncClient, EventLoop), String> {
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let outcome = tokio::time::timeout(PROBE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer".into()));
    outcome.map(|()| (client, eventloop))
}

/// What became of a subscription.
#[derive(Debug, PartialEq)]
enum Sub {
    Granted,
    Refused,
    Closed,
}

/// Subscribes to `filter` alone, and fails the test if any message arrives
/// meanwhile.
async fn subscribe(client: &AsyncClient, eventloop: &mut EventLoop, filter: &str) -> Sub {
    if client.subscribe(filter, QoS::AtLeastOnce).await.is_err() {
        return Sub::Closed;
    }
    let outcome = tokio::time::timeout(PROBE, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    return match ack.return_codes.first() {
                        Some(SubscribeReasonCode::Success(_)) => Sub::Granted,
                        _ => Sub::Refused,
                    };
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    panic!("received a message on {} while probing {filter}", p.topic)
                }
                Ok(_) => {}
                Err(_) => return Sub::Closed,
            }
        }
    })
    .await;
    outcome.unwrap_or(Sub::Closed)
}

/// Polls for `window` and returns the topics of the messages received;
/// `None` if the connection closed.
async fn received(eventloop: &mut EventLoop, window: Duration) -> Option<Vec<String>> {
    let mut topics = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await {
            Err(_) => return Some(topics),
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => topics.push(p.topic.clone()),
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return None,
        }
    }
}

/// Every filter through which node A might read node B's messages.
fn foreign_filters(b: &str) -> Vec<String> {
    let mut v = vec![
        topic::down(b),
        topic::module(b),
        topic::up(b),
        topic::presence(b),
        format!("spoke/v1/nodes/{b}/#"),
        format!("spoke/v1/nodes/{b}/+"),
        format!("+/v1/nodes/{b}/down"),
        "#".into(),
        "+/#".into(),
        "+/+/+/+/+".into(),
        "spoke/#".into(),
        "spoke/v1/nodes/#".into(),
        "spoke/v1/nodes/+/down".into(),
        "spoke/v1/nodes/+/module".into(),
        topic::ALL_UP.into(),
        topic::ALL_PRESENCE.into(),
        "$SYS/#".into(),
        "$SYS/broker/clients/connected".into(),
    ];
    v.sort();
    v
}

/// Node A (credentials `a`) tries every way into node B's topics while B's
/// agent runs and is sent a Secret. `embedded` tells what the broker does
/// with a client id that is not `spoke-agent-<user>`: refuse (embedded) or
/// replace it by the user name (Mosquitto's `use_username_as_clientid`).
async fn node_a_cannot_reach_node_b(hub: &Hub, embedded: bool) {
    let a = join(hub, "node-a").await;
    // Kept for the caller's revocation check.
    std::fs::write(
        hub.dir.path().join("node-a.json"),
        serde_json::to_string(&a).unwrap(),
    )
    .unwrap();
    let _b_agent = hub.agent("node-b", &[]);
    hub.wait_node_ready("node-b").await;
    let a_id = "spoke-agent-node-a";

    // Anonymous, wrong password, B's user name with A's password.
    assert!(
        connect(options(&a, a_id, None, "")).await.is_err(),
        "anonymous"
    );
    assert!(
        connect(options(&a, a_id, Some("node-a"), "wrong"))
            .await
            .is_err(),
        "wrong password"
    );
    assert!(
        connect(options(
            &a,
            "spoke-agent-node-b",
            Some("node-b"),
            &a.password
        ))
        .await
        .is_err(),
        "B's user name with A's password"
    );
    // User names with wildcards or '/', and A's password.
    for user in [
        "node-a/#",
        "+",
        "#",
        "node-a+",
        "node-a/",
        "spoke/v1/nodes/+",
    ] {
        let id = format!("spoke-agent-{user}");
        assert!(
            connect(options(&a, &id, Some(user), &a.password))
                .await
                .is_err(),
            "user name {user:?}"
        );
    }
    // Client ids that are not A's own: B's (a session takeover), wildcards, '/'.
    for id in [
        "spoke-agent-node-b",
        "spoke-agent-+",
        "spoke-agent-#",
        "spoke-agent-node-a/x",
        "+",
        "#",
        "spoke-hub",
    ] {
        match connect(options(&a, id, Some("node-a"), &a.password)).await {
            Err(_) => {}
            Ok((client, mut eventloop)) => {
                assert!(!embedded, "the embedded broker accepted client id {id:?}");
                // Mosquitto named the session after the user: it is A's, and
                // B's session was not taken over (checked at the end).
                subscribe(&client, &mut eventloop, &topic::down("node-b")).await;
            }
        }
    }

    // A's own credentials: its own topics work (the probes can tell), and
    // nothing of B's does.
    let (mut client, mut eventloop) = connect(options(&a, a_id, Some("node-a"), &a.password))
        .await
        .expect("A connects with its own credentials");
    assert_eq!(
        subscribe(&client, &mut eventloop, &topic::down("node-a")).await,
        Sub::Granted
    );
    for filter in foreign_filters("node-b") {
        let outcome = subscribe(&client, &mut eventloop, &filter).await;
        // The embedded broker refuses (0x80). Mosquitto 2.0 grants every
        // subscription and applies its ACL to each message delivered, so
        // there the proof is that nothing of B's arrives (below).
        if embedded {
            assert_ne!(outcome, Sub::Granted, "subscribe {filter}");
        }
        if outcome == Sub::Closed {
            // A broker may close instead of answering: carry on connected.
            (client, eventloop) = connect(options(&a, a_id, Some("node-a"), &a.password))
                .await
                .expect("A reconnects");
        }
    }
    finish(hub, client, eventloop, embedded, &a).await;
}

/// The rest of the probe, from a connection of A that has tried (and been
/// refused) every foreign subscription.
async fn finish(
    hub: &Hub,
    client: AsyncClient,
    mut eventloop: EventLoop,
    embedded: bool,
    a: &JoinResponse,
) {
    // B gets a Secret in its desired state; A's connection sees nothing.
    let c = hub.client();
    c.create(
        "/api/v1/namespaces/default/secrets",
        &json!({"metadata": {"name": "b-only"}, "data": {"key": "dG9wLXNlY3JldA=="}}),
    )
    .await
    .expect("secret");
    c.create(
        "/api/v1/namespaces/default/pods",
        &json!({
            "metadata": {"name": "on-b"},
            "spec": {
                "nodeName": "node-b",
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": "sha256:0000000000000000000000000000000000000000000000000000000000000000",
                    "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "b-only", "key": "key"}}}],
                }],
            },
        }),
    )
    .await
    .expect("pod");
    // B acknowledges the revision that carries the pod: it was sent.
    eventually(Duration::from_secs(30), "node-b to apply the pod", || {
        let c = c.clone();
        async move {
            let node: Value = c.get("/api/v1/nodes/node-b").await.ok()?;
            let applied = node["metadata"]["annotations"]["spoke.dev/applied-revision"]
                .as_str()?
                .to_string();
            let desired = node["metadata"]["annotations"]["spoke.dev/desired-revision"]
                .as_str()?
                .to_string();
            let pod: Value = c.get("/api/v1/namespaces/default/pods/on-b").await.ok()?;
            let _ = pod;
            (applied == desired && applied != "0").then_some(())
        }
    })
    .await;
    let topics = received(&mut eventloop, Duration::from_secs(1))
        .await
        .expect("A's connection is still open");
    assert!(topics.is_empty(), "A received {topics:?}");

    // Publishing as B: refused. The embedded broker closes the connection;
    // Mosquitto drops the message. Either way the hub never sees the forged
    // acknowledgement.
    for name in [topic::up("node-b"), topic::presence("node-b")] {
        let (client, mut eventloop) = connect(options(
            a,
            "spoke-agent-node-a",
            Some("node-a"),
            &a.password,
        ))
        .await
        .expect("A connects");
        client
            .publish(&name, QoS::AtLeastOnce, false, FORGED_ACK.to_vec())
            .await
            .expect("queue the publish");
        let outcome = received(&mut eventloop, Duration::from_secs(2)).await;
        if embedded {
            assert!(
                outcome.is_none(),
                "publish to {name} did not close the connection"
            );
        }
    }
    let node: Value = c.get("/api/v1/nodes/node-b").await.expect("node-b");
    assert_ne!(
        node["metadata"]["annotations"]["spoke.dev/applied-revision"], "999999",
        "the hub took A's forged ack for B's"
    );
    // Whatever was tried, B is still connected and its node still Ready.
    hub.wait_node_ready("node-b").await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cannot_reach_another_nodes_topics_on_the_embedded_broker() {
    let hub = Hub::start().await;
    assert!(hub.mqtt_url.starts_with("mqtts://"), "TLS by default");
    node_a_cannot_reach_node_b(&hub, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_cannot_reach_another_nodes_topics_on_mosquitto_over_tls() {
    let (hub, mosquitto) = Hub::start_with_mosquitto(true).await;
    assert!(mosquitto.url.starts_with("mqtts://"));
    node_a_cannot_reach_node_b(&hub, false).await;

    // Deleting node A rewrites Mosquitto's password file (and reloads it):
    // A's credentials stop working.
    let a: JoinResponse =
        serde_json::from_str(&std::fs::read_to_string(hub.dir.path().join("node-a.json")).unwrap())
            .unwrap();
    hub.client()
        .delete("/api/v1/nodes/node-a", None)
        .await
        .expect("delete node-a");
    eventually(
        Duration::from_secs(30),
        "Mosquitto to refuse the deleted node",
        || {
            let o = options(&a, "spoke-agent-node-a", Some("node-a"), &a.password);
            async move { connect(o).await.err() }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn joining_needs_a_live_bootstrap_token_and_happens_once() {
    let hub = Hub::start().await;
    let creds = join(&hub, "pi-1").await;
    assert_eq!(creds.username, "pi-1");
    assert!(creds.broker_url.starts_with("mqtts://"));
    assert!(
        creds
            .ca_pem
            .as_deref()
            .is_some_and(|p| p.contains("BEGIN CERTIFICATE"))
    );
    // The Node exists from the join on.
    let _: Value = hub.client().get("/api/v1/nodes/pi-1").await.expect("node");

    let code = |r: Result<Value, spoke_client::Error>| match r {
        Err(spoke_client::Error::Api(s)) => s.code,
        other => panic!("{other:?}"),
    };
    let boot = hub.client_with(Some(&hub.bootstrap_token));
    // Once only: a second join under a joined name is refused.
    assert_eq!(
        code(boot.create(JOIN_PATH, &json!({"nodeName": "pi-1"})).await),
        409
    );
    // Bad names name the field.
    let e = boot
        .create(JOIN_PATH, &json!({"nodeName": "Pi_1"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nodeName"), "{e}");
    // A bootstrap token does nothing else; other roles cannot join.
    assert_eq!(code(boot.get::<Value>("/api/v1/pods").await), 403);
    let view = hub.create_token("viewer", "view", None).await;
    let view = hub.client_with(Some(&view));
    assert_eq!(
        code(view.create(JOIN_PATH, &json!({"nodeName": "pi-2"})).await),
        403
    );
    // A bootstrap token must expire.
    let e = hub
        .client()
        .create(
            "/apis/spoke.dev/v1/tokens",
            &json!({"metadata": {"name": "forever"}, "spec": {"role": "bootstrap"}}),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expirationSeconds"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_node_is_disconnected_and_cannot_connect_again() {
    let hub = Hub::start().await;
    let agent = hub.agent("pi-gone", &[]);
    hub.wait_node_ready("pi-gone").await;
    let stored = std::fs::read_to_string(agent.data_dir.join("credentials.json")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(agent.data_dir.join("credentials.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let creds: JoinResponse = serde_json::from_str(&stored).unwrap();
    // Its credentials work while the node exists.
    let id = "spoke-agent-pi-gone";
    drop(
        connect(options(&creds, id, Some("pi-gone"), &creds.password))
            .await
            .expect("connects before the deletion"),
    );

    hub.client()
        .delete("/api/v1/nodes/pi-gone", None)
        .await
        .expect("delete the node");
    let refusal = eventually(
        Duration::from_secs(30),
        "the node's credentials to stop working",
        || {
            let o = options(&creds, id, Some("pi-gone"), &creds.password);
            async move { connect(o).await.err() }
        },
    )
    .await;
    assert!(!refusal.is_empty());
    // The agent, kicked out, cannot bring its Node back.
    eventually(Duration::from_secs(30), "the agent to be refused", || {
        let log = agent.proc.output();
        async move {
            // Closed by the hub at the deletion, then refused on reconnect.
            (log.contains("lost the connection to the hub's broker")
                && log.contains("the hub's broker refused this node"))
            .then_some(())
        }
    })
    .await;
    let gone = hub.client().get::<Value>("/api/v1/nodes/pi-gone").await;
    assert!(gone.is_err(), "the node came back: {gone:?}");
    assert!(
        hub.proc
            .output()
            .contains("its MQTT credentials are revoked"),
        "the hub did not revoke the credentials"
    );
}
