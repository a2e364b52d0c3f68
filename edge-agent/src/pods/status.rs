//! Pod status in Kubernetes' shapes, computed from the containers' lifecycle records.

use std::time::SystemTime;

use spoke_api::core::{
    Condition, ContainerState, ContainerStatus, PodSpec, PodStatus, StateRunning, StateTerminated,
    StateWaiting,
};

use super::lifecycle::{self, Container, State, Termination};

/// RFC 3339 with seconds, as Kubernetes writes timestamps.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn terminated(t: &Termination) -> StateTerminated {
    StateTerminated {
        exit_code: t.exit_code,
        reason: t.reason.to_string(),
        message: t.message.clone(),
        started_at: Some(timestamp(t.started_at)),
        finished_at: Some(timestamp(t.finished_at)),
    }
}

fn container_state(state: &State) -> ContainerState {
    match state {
        State::Waiting { reason, message } => ContainerState {
            waiting: Some(StateWaiting {
                reason: reason.as_str().to_string(),
                message: message.clone(),
            }),
            ..Default::default()
        },
        State::Running { started_at } => ContainerState {
            running: Some(StateRunning {
                started_at: Some(timestamp(*started_at)),
            }),
            ..Default::default()
        },
        State::Terminated(t) => ContainerState {
            terminated: Some(terminated(t)),
            ..Default::default()
        },
    }
}

/// The status of a pod. `previous` carries the conditions last reported, so
/// that `lastTransitionTime` moves only when a condition changes.
pub fn pod_status(
    spec: &PodSpec,
    containers: &[Container],
    start_time: SystemTime,
    previous: Option<&PodStatus>,
    now: SystemTime,
) -> PodStatus {
    let container_statuses = spec
        .containers
        .iter()
        .zip(containers)
        .map(|(c, life)| ContainerStatus {
            name: c.name.clone(),
            state: container_state(&life.state),
            last_state: life
                .last_state
                .as_ref()
                .map(|t| ContainerState {
                    terminated: Some(terminated(t)),
                    ..Default::default()
                })
                .unwrap_or_default(),
            ready: life.ready(),
            restart_count: life.restart_count,
            image: c.image.clone(),
            image_id: life.image_id.clone().unwrap_or_default(),
            started: Some(life.started()),
        })
        .collect::<Vec<_>>();
    let phase = lifecycle::pod_phase(containers);
    let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready());
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let condition = |type_: &str, ok: bool| {
        let status = if ok { "True" } else { "False" };
        let since = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| timestamp(now));
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: (!ok).then(|| not_ready_reason.to_string()),
            message: None,
            last_transition_time: Some(since),
            last_heartbeat_time: None,
        }
    };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
            condition("ContainersReady", all_ready),
            condition("Ready", all_ready),
        ],
        message: None,
        reason: None,
        host_ip: None,
        start_time: Some(timestamp(start_time)),
        container_statuses,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::lifecycle::{Backoff, Observation, RestartPolicy};
    use spoke_api::core::Container as SpecContainer;
    use std::time::Duration;

    fn spec() -> PodSpec {
        PodSpec {
            containers: vec![SpecContainer {
                name: "main".into(),
                image: "hello:v1".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_running_container_makes_a_ready_running_pod_in_kubernetes_shapes() {
        let b = Backoff::default();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (c, _) = Container::new(&b);
        let (c, _) = c.step(
            Observation::ImageReady {
                digest: "sha256:ab".into(),
            },
            RestartPolicy::Always,
            &b,
        );
        let (c, _) = c.step(Observation::Started { at: t }, RestartPolicy::Always, &b);
        let status = pod_status(&spec(), &[c], t, None, t);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["phase"], "Running");
        assert_eq!(json["startTime"], "2023-11-14T22:13:20Z");
        let cs = &json["containerStatuses"][0];
        assert_eq!(cs["state"]["running"]["startedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(cs["imageID"], "sha256:ab");
        assert_eq!(cs["ready"], true);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");

        // A later status keeps the transition time of an unchanged condition.
        let later = t + Duration::from_secs(60);
        let (c2, _) = Container::new(&b);
        let again = pod_status(&spec(), &[c2], t, Some(&status), later);
        let scheduled = |s: &PodStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "PodScheduled")
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(scheduled(&again), scheduled(&status));
        let ready = again
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.last_transition_time.as_deref(),
            Some("2023-11-14T22:14:20Z")
        );
    }
}
