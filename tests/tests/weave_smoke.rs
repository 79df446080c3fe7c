//! weave's own smoke tests (weaveworks/weave `test/*.sh`), ported to our
//! harness: what each asserts, checked on meshnet invoked as `weave` (a
//! symlink to the binary under test) in lab hosts, with weave's environment
//! variables. The table in tests/README.md says which weave tests are here.
//!
//! Needs root (network namespaces) and a built `meshnet`; the proxy tests
//! need the Docker engine.
//!
//! Layout: this file (running `weave`, status/report helpers, 700, 110,
//! usage); `weave_smoke/router.rs` (1xx, 3xx: encryption, discovery,
//! targets, rmpeer, peer names); `weave_smoke/expose.rs` (130);
//! `weave_smoke/dns.rs` (2xx);
//! `weave_smoke/proxy.rs` (6xx and 255, Docker).

#[path = "weave_smoke/dns.rs"]
mod dns;
#[path = "weave_smoke/expose.rs"]
mod expose;
#[path = "weave_smoke/proxy.rs"]
mod proxy;
#[path = "weave_smoke/router.rs"]
mod router;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub use meshnet_tests::Host;
use meshnet_tests::status::parse_connections;
use meshnet_tests::{control_addr, lab_on_one_segment, meshnet_bin, require_root, wait_for};

const CONVERGE: Duration = Duration::from_secs(60);

/// A directory holding `weave` -> the meshnet binary under test.
fn weave_link() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let link = dir.path().join("weave");
    std::os::unix::fs::symlink(meshnet_bin(), &link).expect("weave symlink");
    (dir, link)
}

/// `weave args` on `host`, with weave's variables `env` (none of ours but the
/// lab's dirs).
fn weave(host: &Host, link: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.netns()])
        .arg(link)
        .args(args)
        .env("MESHNET_RUN_DIR", host.run_dir())
        .env("MESHNET_DATA_DIR", host.data_dir())
        .env("WEAVE_HTTP_ADDR", "127.0.0.1:6784");
    for s in meshnet::settings::LAUNCH {
        cmd.env_remove(s.ours).env_remove(s.weave);
    }
    cmd.env_remove("MESHNET_HTTP_ADDR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    host.run(&mut cmd)
        .unwrap_or_else(|e| panic!("weave {args:?} on {}: {e:#}", host.name()))
}

/// `weave args`, which must succeed; its stdout.
fn ok(host: &Host, link: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = weave(host, link, args, env);
    assert!(
        out.status.success(),
        "weave {args:?} on {} failed ({}): {}{}",
        host.name(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `weave launch --proxy=false extra...` on `host`, which must succeed
/// (the router tests need no Docker proxy); the peer name it printed.
fn launch(host: &Host, link: &Path, extra: &[&str]) -> String {
    let args = [&["launch", "--proxy=false"][..], extra].concat();
    ok(host, link, &args, &[]).trim().to_string()
}

/// The value after `Label: ` in `weave status`.
fn status_field(status: &str, label: &str) -> String {
    status
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label} in status:\n{status}"))
        .to_string()
}

/// weave 700_status_and_report_2: status fields match report templates;
/// `status peers` shows the nickname; `status targets` and `status
/// connections` show a target as typed; the version check is disabled.
#[test]
fn weave_700_status_and_report() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w700", &["h1", "h2"]);
    let (h1, h2) = (lab.host("h1"), lab.host("h2"));
    let universe = "10.2.0.0/16";
    ok(
        h1,
        &link,
        &[
            "launch",
            "--ipalloc-range",
            universe,
            "--name",
            "8a:3e:3e:3e:3e:3e",
            "--nickname",
            "nicknamington",
            "--proxy=false",
        ],
        &[],
    );
    ok(
        h2,
        &link,
        &["launch", "--proxy=false"],
        &[("IPALLOC_RANGE", universe)],
    );

    let status = ok(h1, &link, &["status"], &[]);
    let report_f = |t: &str| ok(h1, &link, &["report", "-f", t], &[]);
    for (label, template, want) in [
        (
            "Name",
            "{{.Router.Name}}({{.Router.NickName}})",
            "8a:3e:3e:3e:3e:3e(nicknamington)",
        ),
        ("Peers", "{{len .Router.Peers}}", "1"),
        ("DefaultSubnet", "{{.IPAM.DefaultSubnet}}", universe),
        ("Domain", "{{.DNS.Domain}}", "weave.local."),
    ] {
        assert_eq!(status_field(&status, label), want, "status:\n{status}");
        assert_eq!(report_f(template), want, "report -f {template}");
    }
    assert!(
        ok(h1, &link, &["status", "peers"], &[]).contains("nicknamington"),
        "status peers names the nickname"
    );
    assert!(ok(h1, &link, &["report"], &[]).contains("nicknamington"));

    ok(h1, &link, &["connect", "10.2.2.1"], &[]);
    assert_eq!(ok(h1, &link, &["status", "targets"], &[]), "10.2.2.1\n");
    let conns = ok(h1, &link, &["status", "connections"], &[]);
    assert_eq!(
        conns.split_whitespace().nth(1),
        Some("10.2.2.1:6783"),
        "second column: {conns}"
    );

    // h2's range came from IPALLOC_RANGE.
    assert_eq!(
        ok(h2, &link, &["report", "-f", "{{.IPAM.Range}}"], &[]),
        universe
    );

    assert_eq!(report_f("{{.VersionCheck.Enabled}}"), "false");
    assert!(
        status.contains("version check update disabled"),
        "status:\n{status}"
    );
    for host in [h1, h2] {
        ok(host, &link, &["stop"], &[]);
    }
}

/// weave 110_sleeve_encryption_2, with weave's environment: WEAVE_PASSWORD
/// and WEAVE_NO_FASTDP on both hosts give an encrypted sleeve connection;
/// the password is on neither router's command line and weave's variable is
/// not in its environment.
#[test]
fn weave_110_sleeve_encryption_from_weave_env() {
    require_root();
    let (_dir, link) = weave_link();
    let lab = lab_on_one_segment("w110", &["h1", "h2"]);
    let (h1, h2) = (lab.host("h1"), lab.host("h2"));
    let env = [("WEAVE_PASSWORD", "wsecret110"), ("WEAVE_NO_FASTDP", "1")];
    ok(h1, &link, &["launch", "--proxy=false"], &env);
    ok(
        h2,
        &link,
        &["launch", "--proxy=false", &control_addr(h1)],
        &env,
    );

    let line = wait_for("h2's encrypted sleeve connection", CONVERGE, || {
        let text = ok(h2, &link, &["status", "connections"], &[]);
        let lines = parse_connections(&text).map_err(|e| format!("{e}: {text}"))?;
        lines
            .into_iter()
            .find(|l| l.state == "established")
            .ok_or(text)
    });
    assert_eq!(line.encryption.as_deref(), Some("encrypted"), "{line:?}");
    assert_eq!(line.overlay.as_deref(), Some("sleeve"), "{line:?}");
    assert_eq!(
        ok(h1, &link, &["report", "-f", "{{.Router.Encryption}}"], &[]),
        "true"
    );
    for host in [h1, h2] {
        let cmdline = meshnet_tests::router_cmdline(host);
        assert!(!cmdline.contains("wsecret110"), "argv: {cmdline}");
        let pid = host.router_pid().expect("router pid");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        let environ = String::from_utf8_lossy(&environ);
        assert!(
            !environ.contains("WEAVE_PASSWORD") && !environ.contains("WEAVE_NO_FASTDP"),
            "weave's variables reached the router: {environ}"
        );
        ok(host, &link, &["stop"], &[]);
    }
}

/// weave's script: usage errors exit 1, unknown and removed commands say so.
#[test]
fn weave_usage_and_exit_codes() {
    let (_dir, link) = weave_link();
    let run = |args: &[&str]| Command::new(&link).args(args).output().expect("weave");
    let help = run(&["--help"]);
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).starts_with("Usage:\n\nweave --help | help"));
    let bogus = run(&["bogus"]);
    assert_eq!(bogus.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bogus.stderr).contains("Unknown weave command 'bogus'"));
    let removed = run(&["launch-router"]);
    assert_eq!(removed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&removed.stderr).contains("has been removed"));
    let bad_flag = run(&["launch", "--mtu", "big"]);
    assert_eq!(bad_flag.status.code(), Some(1));
    // As meshnet, clap's own status for a usage error stays.
    let meshnet = Command::new(meshnet_bin())
        .arg("bogus")
        .output()
        .expect("meshnet");
    assert_eq!(meshnet.status.code(), Some(2));
}
