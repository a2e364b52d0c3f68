//! Authorization: may this identity do what these request attributes say?
//! A pure function of the two, tested table-style.
//!
//! The rules, by role (a namespace-bound token reaches only paths in its
//! namespace, and of cluster-scoped objects only its own namespace, to read):
//! - `admin`: everything (bound: everything in the namespace except deleting
//!   or changing the namespace itself).
//! - `edit`: every verb on objects in namespaces; cluster-wide also reads
//!   cluster-scoped objects (nodes, namespaces, modules) and pushes modules.
//!   Never tokens.
//! - `view`: get, list and watch, except secrets and tokens.
//! - `node`: only what the agent of the node named like the token needs:
//!   read and update its own Node (and its status), list and watch the pods
//!   bound to it (`fieldSelector=spec.nodeName=<node>`), download modules.
//! - `bootstrap`: only join a board (`POST /apis/spoke.dev/v1/join`), which
//!   cluster-wide admins may also do.
//!
//! Discovery paths are open to every authenticated identity; other
//! non-resource paths to cluster-wide admins only.

use spoke_api::auth::Role;

use super::Identity;
use super::request::Attributes;

/// Resources no role but a cluster-wide admin may touch.
const ADMIN_ONLY: [&str; 1] = ["tokens"];
/// Resources whose contents `view` may not read (as in Kubernetes).
const HIDDEN_FROM_VIEW: [&str; 2] = ["secrets", "tokens"];

/// Whether `who` may do `what`.
pub fn allows(who: &Identity, what: &Attributes) -> bool {
    if what.resource.is_empty() {
        return what.discovery && what.verb == "get"
            || who.role == Role::Admin && who.namespace.is_none();
    }
    match who.role {
        Role::Node => node_allows(&who.name, what),
        Role::Bootstrap => is_join(what),
        role => match &who.namespace {
            None => cluster_allows(role, what),
            Some(bound) => namespace_allows(role, bound, what),
        },
    }
}

fn cluster_allows(role: Role, what: &Attributes) -> bool {
    let resource = what.resource.as_str();
    // `namespaces/{name}` carries the name as its namespace: it is still a
    // cluster-scoped object.
    let in_namespace = what.namespace.is_some() && resource != "namespaces";
    match role {
        Role::Admin => true,
        Role::Edit if ADMIN_ONLY.contains(&resource) => false,
        Role::Edit if in_namespace => true,
        Role::Edit => what.is_read() || (resource == "modules" && what.verb == "create"),
        Role::View => what.is_read() && !HIDDEN_FROM_VIEW.contains(&resource),
        Role::Node | Role::Bootstrap => false,
    }
}

fn namespace_allows(role: Role, bound: &str, what: &Attributes) -> bool {
    if what.namespace.as_deref() != Some(bound) || ADMIN_ONLY.contains(&what.resource.as_str()) {
        return false;
    }
    if what.resource == "namespaces" {
        return what.is_read();
    }
    match role {
        Role::Admin | Role::Edit => true,
        Role::View => what.is_read() && !HIDDEN_FROM_VIEW.contains(&what.resource.as_str()),
        Role::Node | Role::Bootstrap => false,
    }
}

/// `POST /apis/spoke.dev/v1/join`: exchanging a bootstrap token for node credentials.
fn is_join(what: &Attributes) -> bool {
    what.group == "spoke.dev"
        && what.resource == "join"
        && what.verb == "create"
        && what.namespace.is_none()
        && what.name.is_none()
}

fn node_allows(node: &str, what: &Attributes) -> bool {
    let verb = what.verb.as_str();
    match what.resource.as_str() {
        "nodes" => {
            what.name.as_deref() == Some(node)
                && matches!(what.subresource.as_str(), "" | "status")
                && matches!(verb, "get" | "update" | "patch")
        }
        "pods" => {
            what.namespace.is_none()
                && what.subresource.is_empty()
                && matches!(verb, "list" | "watch")
                && selects_only_node(what.field_selector.as_deref(), node)
        }
        "modules" => what.group == "spoke.dev" && verb == "get",
        _ => false,
    }
}

/// Whether a field selector restricts a pod list to `spec.nodeName=node`.
fn selects_only_node(selector: Option<&str>, node: &str) -> bool {
    selector.is_some_and(|sel| {
        sel.split(',').any(|term| {
            let term = term.trim();
            let value = term
                .strip_prefix("spec.nodeName==")
                .or_else(|| term.strip_prefix("spec.nodeName="));
            value == Some(node)
        })
    })
}

/// Kubernetes' wording for a refusal:
/// `pods is forbidden: token "ci" cannot create resource "pods" in namespace "prod"`.
pub fn forbidden_message(who: &Identity, what: &Attributes) -> String {
    if what.resource.is_empty() {
        return format!(
            "forbidden: token \"{}\" cannot {} path \"{}\"",
            who.name, what.verb, what.path
        );
    }
    let subject = match &what.name {
        Some(name) if what.verb != "create" => format!("{} \"{name}\"", what.resource),
        _ => what.resource.clone(),
    };
    let scope = match &what.namespace {
        Some(ns) if what.resource != "namespaces" => format!("in namespace \"{ns}\""),
        _ => "at the cluster scope".to_string(),
    };
    format!(
        "{subject} is forbidden: token \"{}\" cannot {} resource \"{}\" {scope}",
        who.name,
        what.verb,
        what.resource_with_sub()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::request::parse;

    fn who(role: Role, namespace: Option<&str>) -> Identity {
        Identity {
            name: "t".into(),
            role,
            namespace: namespace.map(str::to_string),
        }
    }

    fn may(who: &Identity, method: &str, path: &str) -> bool {
        let (p, q) = path.split_once('?').unwrap_or((path, ""));
        allows(who, &parse(method, p, Some(q)))
    }

    const POD: &str = "/api/v1/namespaces/prod/pods/a";
    const PODS: &str = "/api/v1/namespaces/prod/pods";

    #[test]
    fn roles_grant_what_their_names_say() {
        // (method, path, admin, edit, view) for cluster-wide tokens.
        let table = [
            ("GET", PODS, true, true, true),
            ("GET", "/api/v1/pods", true, true, true),
            ("POST", PODS, true, true, false),
            ("PUT", POD, true, true, false),
            ("PATCH", POD, true, true, false),
            ("DELETE", POD, true, true, false),
            (
                "GET",
                "/api/v1/namespaces/prod/pods/a/log",
                true,
                true,
                true,
            ),
            (
                "GET",
                "/api/v1/namespaces/prod/secrets/db",
                true,
                true,
                false,
            ),
            ("GET", "/api/v1/nodes", true, true, true),
            ("DELETE", "/api/v1/nodes/pi", true, false, false),
            ("POST", "/api/v1/namespaces", true, false, false),
            ("DELETE", "/api/v1/namespaces/prod", true, false, false),
            ("POST", "/apis/spoke.dev/v1/modules", true, true, false),
            ("GET", "/apis/spoke.dev/v1/modules", true, true, true),
            ("GET", "/apis/spoke.dev/v1/tokens", true, false, false),
            ("POST", "/apis/spoke.dev/v1/tokens", true, false, false),
            ("GET", "/apis/apps/v1", true, true, true),
            ("GET", "/metrics", true, false, false),
        ];
        for (method, path, admin, edit, view) in table {
            for (role, want) in [(Role::Admin, admin), (Role::Edit, edit), (Role::View, view)] {
                assert_eq!(
                    may(&who(role, None), method, path),
                    want,
                    "{role} {method} {path}"
                );
            }
        }
    }

    #[test]
    fn a_namespace_bound_token_stays_in_its_namespace() {
        let edit = who(Role::Edit, Some("prod"));
        assert!(may(&edit, "POST", PODS));
        assert!(may(&edit, "DELETE", POD));
        assert!(may(&edit, "GET", "/api/v1/namespaces/prod"));
        assert!(!may(&edit, "DELETE", "/api/v1/namespaces/prod"));
        assert!(!may(&edit, "POST", "/api/v1/namespaces/default/pods"));
        assert!(!may(&edit, "GET", "/api/v1/pods"));
        assert!(!may(&edit, "GET", "/api/v1/nodes"));
        assert!(!may(&edit, "GET", "/api/v1/namespaces"));
        assert!(!may(&edit, "POST", "/apis/spoke.dev/v1/modules"));
        assert!(!may(&edit, "GET", "/api/v1/namespaces/prodx/pods"));
        let view = who(Role::View, Some("prod"));
        assert!(may(&view, "GET", PODS));
        assert!(!may(&view, "POST", PODS));
        assert!(!may(&view, "GET", "/api/v1/namespaces/prod/secrets"));
        let admin = who(Role::Admin, Some("prod"));
        assert!(may(&admin, "GET", "/api/v1/namespaces/prod/secrets/x"));
        assert!(!may(&admin, "GET", "/apis/spoke.dev/v1/tokens"));
        assert!(!may(&admin, "GET", "/metrics"));
    }

    #[test]
    fn a_node_token_reaches_only_its_own_node() {
        let node = Identity {
            name: "pi-1".into(),
            role: Role::Node,
            namespace: None,
        };
        assert!(may(&node, "GET", "/api/v1/nodes/pi-1"));
        assert!(may(&node, "PUT", "/api/v1/nodes/pi-1/status"));
        assert!(may(
            &node,
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dpi-1"
        ));
        assert!(may(
            &node,
            "GET",
            "/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3D%3Dpi-1"
        ));
        assert!(may(&node, "GET", "/apis/spoke.dev/v1/modules/sha256:ab"));
        assert!(may(&node, "GET", "/api"));
        for (method, path) in [
            ("GET", "/api/v1/nodes/pi-2"),
            ("DELETE", "/api/v1/nodes/pi-1"),
            ("GET", "/api/v1/nodes"),
            ("GET", "/api/v1/pods"),
            ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Dpi-2"),
            (
                "GET",
                "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dpi-1",
            ),
            ("POST", PODS),
            ("GET", "/api/v1/namespaces/default/secrets"),
            ("POST", "/apis/spoke.dev/v1/modules"),
            ("GET", "/apis/spoke.dev/v1/tokens"),
            ("GET", "/metrics"),
        ] {
            assert!(!may(&node, method, path), "node may {method} {path}");
        }
    }

    #[test]
    fn a_bootstrap_token_can_only_join() {
        let join = who(Role::Bootstrap, None);
        assert!(may(&join, "POST", "/apis/spoke.dev/v1/join"));
        assert!(may(
            &who(Role::Admin, None),
            "POST",
            "/apis/spoke.dev/v1/join"
        ));
        for (method, path) in [
            ("GET", "/apis/spoke.dev/v1/join"),
            ("POST", "/apis/spoke.dev/v1/join/x"),
            ("GET", "/api/v1/nodes"),
            ("GET", "/api/v1/nodes/pi-1"),
            ("POST", PODS),
            ("GET", "/apis/spoke.dev/v1/tokens"),
            ("POST", "/apis/spoke.dev/v1/tokens"),
            ("GET", "/apis/spoke.dev/v1/modules"),
        ] {
            assert!(!may(&join, method, path), "bootstrap may {method} {path}");
        }
        for role in [Role::Edit, Role::View, Role::Node] {
            assert!(
                !may(&who(role, None), "POST", "/apis/spoke.dev/v1/join"),
                "{role}"
            );
        }
    }

    #[test]
    fn refusals_read_like_kubectl() {
        let ci = Identity {
            name: "ci".into(),
            role: Role::View,
            namespace: Some("prod".into()),
        };
        let msg = |m: &str, p: &str| forbidden_message(&ci, &parse(m, p, None));
        assert_eq!(
            msg("POST", PODS),
            "pods is forbidden: token \"ci\" cannot create resource \"pods\" in namespace \"prod\""
        );
        assert_eq!(
            msg("DELETE", POD),
            "pods \"a\" is forbidden: token \"ci\" cannot delete resource \"pods\" in namespace \"prod\""
        );
        assert_eq!(
            msg("GET", "/api/v1/nodes"),
            "nodes is forbidden: token \"ci\" cannot list resource \"nodes\" at the cluster scope"
        );
        assert_eq!(
            msg("GET", "/metrics"),
            "forbidden: token \"ci\" cannot get path \"/metrics\""
        );
    }
}
