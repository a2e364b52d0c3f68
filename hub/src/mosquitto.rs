//! Mosquitto as the external broker with the same isolation as the embedded
//! one: the hub writes Mosquitto's password file, ACL file and a config
//! fragment into `--mosquitto-dir`, at start and whenever node credentials
//! change (join, revocation), and asks Mosquitto to reload them (SIGHUP to
//! the pid in `--mosquitto-pid-file`).
//!
//! Files:
//! - `passwd`: the hub (user `_spoke-hub`) and every joined node, as
//!   `user:$6$<salt>$<sha512(password || salt)>` (base64), a format
//!   Mosquitto 2.0 reads. The hub keeps this hash beside the sha256 it
//!   checks itself, since the password is known only when issued.
//! - `acl`: the hub may do anything; a node `%u` may read only its own
//!   `down` and `module` topics and write only its own `up` and `presence`.
//! - `spoke.conf`: `allow_anonymous false` and the two files (global
//!   options only). Include it from mosquitto.conf (`include_dir <dir>`) and
//!   set `use_username_as_clientid true` in each listener section, so a node
//!   cannot take over another node's session by naming its client id (a
//!   listener option: written in an included file, Mosquitto would open an
//!   extra default listener on port 1883 for it).
//!
//! Caveat: Mosquitto keeps an already connected client of a revoked node
//! until it disconnects; the next connect is refused.

use std::path::PathBuf;

use base64::Engine as _;
use sha2::{Digest, Sha512};

use crate::auth::join::NodeCredentials;
use crate::broker::HUB_USER;
use crate::store::{self, Store};

/// Mosquitto's `$6$` password hash of `password` with a random salt.
pub fn password_hash(password: &str) -> Result<String, crate::api::Error> {
    let mut salt = [0u8; 12];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut salt)
        .map_err(|_| crate::api::Error::Internal("the system random generator failed".into()))?;
    let digest = Sha512::new()
        .chain_update(password.as_bytes())
        .chain_update(salt)
        .finalize();
    let b64 = &base64::engine::general_purpose::STANDARD;
    Ok(format!("$6${}${}", b64.encode(salt), b64.encode(digest)))
}

/// The ACL file: the same rules as the embedded broker's hooks.
pub fn acl() -> String {
    format!(
        "# Written by spoke-hub: regenerated at start and on every join and revocation.\n\
         user {HUB_USER}\n\
         topic readwrite #\n\
         \n\
         # Every node (%u is its user name, which is its node name).\n\
         pattern read spoke/v1/nodes/%u/down\n\
         pattern read spoke/v1/nodes/%u/module\n\
         pattern write spoke/v1/nodes/%u/up\n\
         pattern write spoke/v1/nodes/%u/presence\n"
    )
}

/// Where the files go and whom to tell.
#[derive(Debug, Clone)]
pub struct Files {
    pub dir: PathBuf,
    pub pid_file: Option<PathBuf>,
}

impl Files {
    /// Writes the three files (passwords mode 0600) and signals Mosquitto.
    pub async fn write(&self, credentials: &NodeCredentials, hub_hash: &str) -> anyhow::Result<()> {
        let mut passwd = format!("{HUB_USER}:{hub_hash}\n");
        for (node, hash) in credentials.mosquitto_hashes().await? {
            passwd.push_str(&format!("{node}:{hash}\n"));
        }
        std::fs::create_dir_all(&self.dir)?;
        crate::tls::write_private(&self.dir.join("passwd"), passwd.as_bytes())?;
        std::fs::write(self.dir.join("acl"), acl())?;
        let conf = format!(
            "# Written by spoke-hub. Include with: include_dir {dir}\n\
             # and set use_username_as_clientid true in each listener section.\n\
             allow_anonymous false\n\
             password_file {dir}/passwd\n\
             acl_file {dir}/acl\n",
            dir = self.dir.display()
        );
        std::fs::write(self.dir.join("spoke.conf"), conf)?;
        self.reload();
        Ok(())
    }

    /// SIGHUP to Mosquitto, which rereads the password and ACL files.
    fn reload(&self) {
        let Some(pid_file) = &self.pid_file else {
            return;
        };
        let Ok(pid) = std::fs::read_to_string(pid_file) else {
            return;
        };
        let pid = pid.trim();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            tracing::warn!(file = %pid_file.display(), "no Mosquitto pid in the pid file");
            return;
        }
        match std::process::Command::new("kill")
            .args(["-HUP", pid])
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::warn!(pid, status = %s, "cannot signal Mosquitto to reload"),
            Err(e) => tracing::warn!(pid, error = %e, "cannot signal Mosquitto to reload"),
        }
    }
}

/// Keeps the files current: writes them now, then after every change of
/// node credentials. Runs until the store's event stream ends.
pub async fn keep_current(
    files: Files,
    store: Store,
    credentials: NodeCredentials,
    hub_hash: String,
) {
    let mut events = store.subscribe();
    let prefix = store::prefix(crate::auth::join::PLURAL, None);
    loop {
        if let Err(e) = files.write(&credentials, &hub_hash).await {
            tracing::error!(dir = %files.dir.display(), error = %e, "cannot write the Mosquitto files");
        }
        // Wait for the next change of credentials (or a gap in the events).
        loop {
            match events.recv().await {
                Ok(event) if event.key.starts_with(&prefix) => break,
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_sha512_in_mosquittos_format() {
        let a = password_hash("pw").unwrap();
        let b = password_hash("pw").unwrap();
        assert_ne!(a, b, "a random salt each time");
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!((parts[0], parts[1]), ("", "6"));
        let b64 = &base64::engine::general_purpose::STANDARD;
        let salt = b64.decode(parts[2]).unwrap();
        let want = Sha512::new()
            .chain_update(b"pw")
            .chain_update(&salt)
            .finalize();
        assert_eq!(b64.decode(parts[3]).unwrap(), want.to_vec());
    }

    #[test]
    fn the_acl_gives_nodes_only_their_own_topics() {
        let acl = acl();
        assert!(acl.contains("pattern read spoke/v1/nodes/%u/down\n"));
        assert!(acl.contains("pattern write spoke/v1/nodes/%u/up\n"));
        assert!(!acl.contains("pattern readwrite"));
        assert!(!acl.contains("pattern read spoke/v1/nodes/%u/up"));
    }
}
