//! The kinds the hub serves and where they live in the URL space.
//!
//! One table, used by the hub to route and by the CLI to turn a manifest's
//! `apiVersion` + `kind` (or a word such as `po`) into a path.

/// One kind of object served by the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// Lower-case plural used in paths: `pods`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Has a `status` subresource: `PUT .../status` writes only the status,
    /// and a plain update keeps the stored one.
    pub status: bool,
    /// Has a `scale` subresource (`spoke scale`).
    pub scale: bool,
}

/// Shorthand for the table below.
const fn kind(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
    namespaced: bool,
) -> ResourceType {
    ResourceType {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        short_names,
        namespaced,
        status: true,
        scale: false,
    }
}

const fn without_status(mut rt: ResourceType) -> ResourceType {
    rt.status = false;
    rt
}

const fn with_scale(mut rt: ResourceType) -> ResourceType {
    rt.scale = true;
    rt
}

/// Every kind the hub serves, in the order users need them.
pub const RESOURCES: &[ResourceType] = &[
    kind("", "Namespace", "namespaces", "namespace", &["ns"], false),
    kind("", "Pod", "pods", "pod", &["po"], true),
    kind("", "Node", "nodes", "node", &["no"], false),
    with_scale(kind(
        "apps",
        "Deployment",
        "deployments",
        "deployment",
        &["deploy"],
        true,
    )),
    with_scale(kind(
        "apps",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        &["rs"],
        true,
    )),
    kind(
        "apps",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        &["ds"],
        true,
    ),
    kind("batch", "Job", "jobs", "job", &[], true),
    kind("batch", "CronJob", "cronjobs", "cronjob", &["cj"], true),
    without_status(kind(
        "",
        "ConfigMap",
        "configmaps",
        "configmap",
        &["cm"],
        true,
    )),
    without_status(kind("", "Secret", "secrets", "secret", &[], true)),
    without_status(kind("", "Event", "events", "event", &["ev"], true)),
    kind(
        "",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        &["quota"],
        true,
    ),
    without_status(kind(
        "",
        "LimitRange",
        "limitranges",
        "limitrange",
        &["limits"],
        true,
    )),
];

impl ResourceType {
    /// `v1` or `apps/v1`, as written in a manifest's `apiVersion`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The collection path: `/api/v1/namespaces/{ns}/pods` or `/api/v1/nodes`.
    /// `namespace` is ignored for cluster-scoped kinds; `None` lists across
    /// all namespaces.
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        let root = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{root}/namespaces/{ns}/{}", self.plural),
            _ => format!("{root}/{}", self.plural),
        }
    }

    /// The path of one object.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    /// Finds a kind by what a user types: plural, singular, short name or
    /// kind, in any case.
    pub fn lookup(word: &str) -> Option<&'static ResourceType> {
        let w = word.to_ascii_lowercase();
        RESOURCES.iter().find(|r| {
            r.plural == w
                || r.singular == w
                || r.kind.eq_ignore_ascii_case(&w)
                || r.short_names.contains(&w.as_str())
        })
    }

    /// Finds a kind by a manifest's `apiVersion` and `kind`.
    pub fn for_manifest(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
        RESOURCES
            .iter()
            .find(|r| r.kind == kind && r.api_version() == api_version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_accepts_plural_singular_short_and_kind() {
        for word in ["pods", "pod", "po", "Pod", "PODS"] {
            assert_eq!(ResourceType::lookup(word).unwrap().kind, "Pod", "{word}");
        }
        assert!(ResourceType::lookup("gadgets").is_none());
    }

    #[test]
    fn paths_follow_kubernetes() {
        let pods = ResourceType::lookup("pods").unwrap();
        assert_eq!(
            pods.object_path(Some("default"), "hello"),
            "/api/v1/namespaces/default/pods/hello"
        );
        assert_eq!(pods.collection_path(None), "/api/v1/pods");
        let nodes = ResourceType::lookup("nodes").unwrap();
        assert_eq!(
            nodes.object_path(Some("ignored"), "pi-1"),
            "/api/v1/nodes/pi-1"
        );
        assert_eq!(ResourceType::for_manifest("v1", "Pod"), Some(pods));
        assert_eq!(ResourceType::for_manifest("apps/v1", "Pod"), None);
        let deploy = ResourceType::lookup("deploy").unwrap();
        assert_eq!(
            deploy.object_path(Some("edge"), "web"),
            "/apis/apps/v1/namespaces/edge/deployments/web"
        );
        assert_eq!(
            ResourceType::for_manifest("batch/v1", "CronJob")
                .unwrap()
                .plural,
            "cronjobs"
        );
    }

    #[test]
    fn every_word_names_one_kind() {
        let mut seen = std::collections::BTreeSet::new();
        for rt in RESOURCES {
            for w in [rt.plural, rt.singular].iter().chain(rt.short_names) {
                assert!(seen.insert(*w), "{w} names two kinds");
            }
        }
    }
}
