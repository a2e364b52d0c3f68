//! Whether a node counts as alive: MQTT presence (fast: keepalive and last
//! will) and the lease its agent renews rarely (slow: proves the whole path
//! from the agent's handler to the hub still works). A pure function of what
//! the hub has seen, so the rules are tested without brokers or clocks.
//!
//! Rules, with `grace` the hub's `--node-grace`:
//! - A node whose presence is `offline` (its last will, or nothing heard
//!   since the hub started) is alive for `grace` after it went away, or
//!   after the hub started, whichever is later. The broker publishes the
//!   will 1.5 keepalives after the link went silent (half-open TCP
//!   included), so a dead link is seen after keepalive × 1.5 + grace.
//! - A node whose presence is `online` is alive until its lease runs out,
//!   plus `grace`. A lease renewed before the hub started counts from the
//!   start, so a hub restart (or a long hub outage) does not flap nodes.
//! - A node that keeps no lease (an older agent) is judged by presence alone.

use std::time::{Duration, Instant};

/// What the hub knows of one node's liveness.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seen {
    /// Presence says the agent is connected.
    pub online: bool,
    /// When presence last went to `offline` (`None`: not since the hub started).
    pub offline_since: Option<Instant>,
    /// The last lease renewal (or hello) since the hub started, and how long it holds.
    pub renewed: Option<(Instant, Duration)>,
    /// The lease duration the Node object records, for a node that has not
    /// renewed since the hub started (its lease counts from the start).
    pub stored_lease: Option<Duration>,
}

/// Whether the node counts as alive at `now`, for a hub started at `started`.
pub fn alive(seen: &Seen, now: Instant, started: Instant, grace: Duration) -> bool {
    if !seen.online {
        let since = seen.offline_since.unwrap_or(started).max(started);
        return now < since + grace;
    }
    let lease = match (seen.renewed, seen.stored_lease) {
        (Some((at, duration)), _) => Some((at.max(started), duration)),
        (None, Some(duration)) => Some((started, duration)),
        (None, None) => None,
    };
    match lease {
        Some((from, duration)) => now < from + duration + grace,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(40);
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn an_offline_node_is_alive_only_for_the_grace_period() {
        let t0 = Instant::now();
        let started = t0;
        let gone = t0 + Duration::from_secs(100);
        let seen = Seen {
            offline_since: Some(gone),
            renewed: Some((t0, HOUR)),
            ..Seen::default()
        };
        assert!(alive(
            &seen,
            gone + GRACE - Duration::from_secs(1),
            started,
            GRACE
        ));
        // A valid lease does not keep an offline node alive: the last will is
        // the fast signal.
        assert!(!alive(&seen, gone + GRACE, started, GRACE));
    }

    #[test]
    fn a_hub_restart_gives_unseen_nodes_the_grace_period() {
        let started = Instant::now();
        let seen = Seen::default();
        assert!(alive(
            &seen,
            started + GRACE - Duration::from_secs(1),
            started,
            GRACE
        ));
        assert!(!alive(&seen, started + GRACE, started, GRACE));
    }

    #[test]
    fn an_online_node_whose_lease_ran_out_is_not_alive() {
        let started = Instant::now();
        let renewed = started + Duration::from_secs(10);
        let seen = Seen {
            online: true,
            renewed: Some((renewed, HOUR)),
            ..Seen::default()
        };
        assert!(alive(&seen, renewed + HOUR, started, GRACE));
        assert!(alive(
            &seen,
            renewed + HOUR + GRACE - Duration::from_secs(1),
            started,
            GRACE
        ));
        // Presence still says online (the hub missed the last will, or the
        // agent's handler is wedged while its pings flow): the lease decides.
        assert!(!alive(&seen, renewed + HOUR + GRACE, started, GRACE));
    }

    #[test]
    fn a_lease_recorded_before_a_hub_restart_counts_from_the_start() {
        let started = Instant::now() + 10 * HOUR;
        // Online by retained presence, lease known only from the Node object.
        let seen = Seen {
            online: true,
            stored_lease: Some(HOUR),
            ..Seen::default()
        };
        assert!(alive(&seen, started + HOUR, started, GRACE));
        assert!(!alive(&seen, started + HOUR + GRACE, started, GRACE));
        // A renewal from before the start is no older than the start.
        let seen = Seen {
            online: true,
            renewed: Some((started - 5 * HOUR, HOUR)),
            ..Seen::default()
        };
        assert!(alive(
            &seen,
            started + Duration::from_secs(1),
            started,
            GRACE
        ));
    }

    #[test]
    fn a_node_without_a_lease_is_judged_by_presence_alone() {
        let started = Instant::now();
        let seen = Seen {
            online: true,
            ..Seen::default()
        };
        assert!(alive(&seen, started + 1000 * HOUR, started, GRACE));
    }
}
