//! Finding the hub: a kubeconfig-shaped file written by `spoke-hub`, with
//! contexts (server, CA, token, namespace).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

/// The parts of a kubeconfig that Spoke reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct KubeConfig {
    #[serde(default)]
    pub clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    pub users: Vec<Named<User>>,
    #[serde(default)]
    pub contexts: Vec<Named<Context>>,
    #[serde(default)]
    pub current_context: Option<String>,
    /// The directory of the file, against which relative paths resolve.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

#[derive(Debug, Deserialize)]
pub struct Named<T> {
    pub name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    pub item: T,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    /// The CA certificate(s) to trust, PEM, base64-encoded.
    #[serde(default)]
    pub certificate_authority_data: Option<String>,
    /// A PEM file with the CA certificate(s) to trust.
    #[serde(default)]
    pub certificate_authority: Option<PathBuf>,
    /// Do not verify the hub's certificate (for experiments only).
    #[serde(default)]
    pub insecure_skip_tls_verify: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Context {
    pub cluster: String,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Where to send requests, resolved from a context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub server: String,
    pub token: Option<String>,
    pub namespace: Option<String>,
    /// How to verify the hub's certificate.
    pub tls: crate::Tls,
}

/// The default location: `$SPOKE_CONFIG`, else `~/.spoke/config`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SPOKE_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".spoke/config"))
}

impl KubeConfig {
    /// Reads a config file.
    pub fn load(path: &Path) -> Result<KubeConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: KubeConfig = serde_yaml::from_str(&text)
            .map_err(|e| format!("{} is not a valid config file: {e}", path.display()))?;
        config.base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(config)
    }

    /// The target of `context`, or of the current context.
    pub fn target(&self, context: Option<&str>) -> Result<Target, String> {
        let name = context
            .or(self.current_context.as_deref())
            .ok_or("the config file has no current-context; pass --context")?;
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("context \"{name}\" not found in the config file"))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.item.cluster)
            .ok_or_else(|| {
                format!(
                    "cluster \"{}\" of context \"{name}\" not found",
                    ctx.item.cluster
                )
            })?;
        let token = ctx
            .item
            .user
            .as_ref()
            .and_then(|u| self.users.iter().find(|x| &x.name == u))
            .and_then(|u| u.item.token.clone());
        let c = &cluster.item;
        let ca_pem = match (&c.certificate_authority_data, &c.certificate_authority) {
            (Some(data), _) => Some(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| {
                        format!(
                            "certificate-authority-data of cluster \"{}\" is not base64: {e}",
                            cluster.name
                        )
                    })?,
            ),
            (None, Some(file)) => {
                let file = self.base_dir.join(file);
                Some(std::fs::read(&file).map_err(|e| {
                    format!(
                        "certificate-authority {} of cluster \"{}\": {e}",
                        file.display(),
                        cluster.name
                    )
                })?)
            }
            (None, None) => None,
        };
        Ok(Target {
            server: c.server.clone(),
            token,
            namespace: ctx.item.namespace.clone(),
            tls: crate::Tls {
                ca_pem,
                insecure_skip_verify: c.insecure_skip_tls_verify,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
apiVersion: v1
kind: Config
clusters:
- name: spoke
  cluster: {server: "http://127.0.0.1:6443"}
- name: farm
  cluster: {server: "https://farm:6443", certificate-authority-data: "LS0tLS1CRUdJTg=="}
- name: lab
  cluster: {server: "https://lab:6443", certificate-authority: ca.pem, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: abc}
contexts:
- name: spoke
  context: {cluster: spoke, user: admin, namespace: default}
- name: farm
  context: {cluster: farm, namespace: sensors}
- name: lab
  context: {cluster: lab}
current-context: spoke
"#;

    #[test]
    fn resolves_the_current_or_a_named_context() {
        let cfg: KubeConfig = serde_yaml::from_str(DOC).unwrap();
        let t = cfg.target(None).unwrap();
        assert_eq!(t.server, "http://127.0.0.1:6443");
        assert_eq!(t.token.as_deref(), Some("abc"));
        let t = cfg.target(Some("farm")).unwrap();
        assert_eq!(
            (
                t.server.as_str(),
                t.namespace.as_deref(),
                t.token.as_deref()
            ),
            ("https://farm:6443", Some("sensors"), None)
        );
        assert_eq!(t.tls.ca_pem.as_deref(), Some(&b"-----BEGIN"[..]));
        assert!(cfg.target(Some("nope")).unwrap_err().contains("nope"));
    }

    #[test]
    fn a_ca_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config"), DOC).unwrap();
        let cfg = KubeConfig::load(&dir.path().join("config")).unwrap();
        let e = cfg.target(Some("lab")).unwrap_err();
        assert!(e.contains("ca.pem") && e.contains("lab"), "{e}");
        std::fs::write(dir.path().join("ca.pem"), "PEM").unwrap();
        let t = cfg.target(Some("lab")).unwrap();
        assert_eq!(t.tls.ca_pem.as_deref(), Some(&b"PEM"[..]));
        assert!(t.tls.insecure_skip_verify);
        assert_eq!(cfg.target(None).unwrap().tls, crate::Tls::default());
    }
}
