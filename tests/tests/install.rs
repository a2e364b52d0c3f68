//! `edge-agent/install/install.sh` as a board owner runs it, into a temporary
//! root: the files it places, their modes, the config the agent reads, the
//! unit as systemd sees it, uninstall, and its refusals.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use spoke_e2e::{bin, repo_root};

fn install(args: &[&str]) -> Output {
    Command::new("sh")
        .arg(repo_root().join("edge-agent/install/install.sh"))
        .args(args)
        .output()
        .expect("run install.sh")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn install_places_binary_private_config_data_dir_and_an_enabled_unit_and_uninstall_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let agent = bin("spoke-agent");
    let o = install(&[
        "--root",
        root.to_str().unwrap(),
        "--binary",
        agent.to_str().unwrap(),
        "--hub",
        "https://10.0.0.1:6443",
        "--token",
        "boot.secret",
        "--ca",
        ca.to_str().unwrap(),
        "--name",
        "Barn-Pi",
        "--allow-host-path",
        "/sys/class/thermal",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("as node barn-pi"), "{}", text(&o));

    let installed = root.join("usr/local/bin/spoke-agent");
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&agent).unwrap()
    );
    let config = root.join("etc/spoke/agent.yaml");
    assert_eq!(mode(&config), 0o600, "the config holds the join token");
    assert_eq!(mode(&root.join("var/lib/spoke-agent")), 0o700);
    assert_eq!(mode(&root.join("etc/spoke/ca.crt")), 0o644);
    let yaml: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(yaml["hub"], "https://10.0.0.1:6443");
    assert_eq!(yaml["name"], "barn-pi");
    assert_eq!(yaml["join-token"], "boot.secret");
    assert_eq!(yaml["ca"], "/etc/spoke/ca.crt");
    assert_eq!(yaml["allow-host-path"][0], "/sys/class/thermal");

    // The agent reads the file it was given: with one bad option added on
    // the command line it exits 64 naming that option, not the file.
    let parsed = Command::new(&agent)
        .arg("--config")
        .arg(&config)
        .args(["--max-pods", "0"])
        .output()
        .unwrap();
    assert_eq!(parsed.status.code(), Some(64), "{}", text(&parsed));
    let msg = text(&parsed);
    assert!(msg.contains("max-pods"), "{msg}");
    assert!(
        !msg.contains("--config"),
        "the written config must parse: {msg}"
    );

    // Enabled at boot: the symlink systemctl enable would make.
    let wants = root.join("etc/systemd/system/multi-user.target.wants/spoke-agent.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("../spoke-agent.service")
    );

    // systemd reads the unit without a single complaint (it only warns on
    // unknown keys, so the test requires silence, not just success).
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let unit = std::fs::read_to_string(root.join("etc/systemd/system/spoke-agent.service"))
            .unwrap()
            .replace("/usr/local/bin/spoke-agent", installed.to_str().unwrap());
        let check = dir.path().join("spoke-agent.service");
        std::fs::write(&check, unit).unwrap();
        let v = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&check)
            .output()
            .unwrap();
        assert!(v.status.success(), "{}", text(&v));
        assert_eq!(text(&v).trim(), "", "systemd-analyze verify complained");
    } else {
        eprintln!("skipped systemd-analyze verify: not installed");
    }

    // Uninstall keeps config and data unless asked to purge.
    std::fs::write(root.join("var/lib/spoke-agent/state.redb"), "x").unwrap();
    let o = install(&["--root", root.to_str().unwrap(), "--uninstall"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!installed.exists() && !wants.exists());
    assert!(!root.join("etc/systemd/system/spoke-agent.service").exists());
    assert!(config.exists() && root.join("var/lib/spoke-agent/state.redb").exists());
    let o = install(&["--root", root.to_str().unwrap(), "--uninstall", "--purge"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!config.exists() && !root.join("var/lib/spoke-agent").exists());
}

#[test]
fn install_refuses_bad_input_naming_the_option_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let r = root.to_str().unwrap();
    let agent = bin("spoke-agent");
    let a = agent.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--hub", "https://h:6443", "--token", "t"],
            "--binary FILE is required",
        ),
        (
            &["--binary", "/nonexistent", "--hub", "mqtt://h"],
            "--binary /nonexistent: no such file",
        ),
        (&["--binary", a], "--hub URL is required"),
        (
            &["--binary", a, "--hub", "https://h:6443"],
            "--token is required",
        ),
        (
            &["--binary", a, "--hub", "ftp://h"],
            "must start with https://",
        ),
        (
            &["--binary", a, "--hub", "mqtt://h", "--name", "pi_1"],
            "--name pi_1",
        ),
        (
            &["--binary", a, "--hub", "mqtt://h", "--ca", "/nonexistent"],
            "--ca /nonexistent",
        ),
        (&["--binary", a, "--hub"], "--hub needs a value"),
        (&["--frobnicate"], "unknown option --frobnicate"),
    ];
    for (args, want) in cases {
        let mut all = vec!["--root", r];
        all.extend_from_slice(args);
        let o = install(&all);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(text(&o).contains(want), "{args:?}: {}", text(&o));
        assert!(!root.exists(), "{args:?} left files behind");
    }
}

/// The cloud-init `user-data` that docs/raspberry-pi.md tells board owners to
/// drop on the SD card: it is what the page shows, it is cloud-config YAML,
/// and its `runcmd` is an install.sh invocation that works once the files
/// are where it says (the boot partition is a temporary directory here, and
/// `--root` keeps it off this machine). cloud-init's own `hostname` step is
/// imitated by writing `/etc/hostname` first, as it runs before `runcmd`.
#[test]
fn cloud_init_user_data_runs_the_installer_and_names_the_node_after_the_host() {
    let file = repo_root().join("edge-agent/install/user-data");
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(
        raw.starts_with("#cloud-config\n"),
        "cloud-init ignores user-data without the #cloud-config header"
    );
    let doc = std::fs::read_to_string(repo_root().join("docs/raspberry-pi.md")).unwrap();
    for line in raw
        .lines()
        .filter(|l| !l.starts_with('#') || *l == "#cloud-config")
    {
        assert!(
            doc.contains(&format!("  {line}\n")),
            "docs/raspberry-pi.md does not show this line of user-data: {line}"
        );
    }

    let yaml: serde_yaml::Value = serde_yaml::from_str(&raw).unwrap();
    let hostname = yaml["hostname"].as_str().expect("hostname");
    let runcmd = yaml["runcmd"].as_sequence().expect("runcmd is a list");
    assert_eq!(runcmd.len(), 1, "{runcmd:?}");
    let argv: Vec<String> = runcmd[0]
        .as_sequence()
        .expect("the command is an argv list (no shell parsing)")
        .iter()
        .map(|a| a.as_str().expect("every argument is a string").to_string())
        .collect();
    assert_eq!(argv[0], "sh");
    assert_eq!(argv[1], "/boot/firmware/spoke/install.sh");

    // The boot partition's spoke/ folder, with the four files the page lists.
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    std::fs::create_dir_all(&boot).unwrap();
    std::fs::copy(
        repo_root().join("edge-agent/install/install.sh"),
        boot.join("install.sh"),
    )
    .unwrap();
    std::fs::copy(
        repo_root().join("edge-agent/install/spoke-agent.service"),
        boot.join("spoke-agent.service"),
    )
    .unwrap();
    std::fs::copy(bin("spoke-agent"), boot.join("spoke-agent")).unwrap();
    std::fs::write(boot.join("ca.crt"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/hostname"), format!("{hostname}\n")).unwrap();

    let moved: Vec<String> = argv[1..]
        .iter()
        .map(|a| a.replace("/boot/firmware/spoke", boot.to_str().unwrap()))
        .collect();
    let o = Command::new(&argv[0])
        .args(&moved)
        .args(["--root", root.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("as node {hostname}")),
        "{}",
        text(&o)
    );
    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("etc/spoke/agent.yaml")).unwrap())
            .unwrap();
    assert_eq!(config["name"], hostname);
    assert_eq!(config["hub"], "https://192.168.1.10:6443");
    assert_eq!(config["join-token"], "PASTE-TOKEN");
    assert!(root.join("usr/local/bin/spoke-agent").exists());
}
