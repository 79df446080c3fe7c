//! The router's local surface, tried as a local user and a web page would:
//! changes only through the root-only control socket, the TCP address only
//! reads and only for loopback `Host`s, the identity key and data dir closed
//! to others, and the password in neither the router's environment nor its
//! argv.
//!
//! Needs root, `setpriv` (util-linux) and `curl`. The unprivileged user is
//! uid/gid 65534 (`nobody`), entered with `setpriv` inside the host's
//! namespace.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use meshnet_tests::{Host, lab_on_one_segment, meshnet_bin, meshnet_ok, report, require_root};

const PASSWORD: &str = "local-surface-secret-2f9c";
/// The lab's API address inside a host (see `meshnet::lab`).
const API: &str = "127.0.0.1:6784";
/// A peer address nobody must be able to add.
const INTRUDER_PEER: &str = "192.0.2.77";

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `argv` inside `host`'s namespace as uid/gid 65534 with no groups.
fn as_nobody(host: &Host, argv: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", host.netns()])
        .args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .args(argv)
        .env("MESHNET_RUN_DIR", host.run_dir())
        .env("MESHNET_DATA_DIR", host.data_dir())
        .env("MESHNET_HTTP_ADDR", API)
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv")
}

/// `curl` in `host` (as root unless `nobody`): returns the HTTP status and body.
fn curl(host: &Host, nobody: bool, extra: &[&str]) -> (String, String) {
    let mut argv = vec!["curl", "-s", "--max-time", "10", "-w", "\n%{http_code}"];
    argv.extend(extra);
    let out = if nobody {
        as_nobody(host, &argv)
    } else {
        host.exec(&argv).expect("curl")
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

fn targets(host: &Host) -> Vec<String> {
    report(host)["Router"]["Targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn only_root_changes_state_only_loopback_hosts_read_and_secrets_stay_private() {
    require_root();
    let lab = lab_on_one_segment("localapi", &["h1"]);
    let h1 = lab.host("h1");
    let mut cmd = h1.command(&["launch", "--nickname", "h1"]);
    cmd.env("MESHNET_PASSWORD", PASSWORD);
    meshnet_tests::launch_with(h1, &mut cmd);

    // The password is in neither the router's environment nor its argv.
    let pid = h1.router_pid().expect("router pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    for (what, bytes) in [("environment", &environ), ("argv", &cmdline)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !text.contains(PASSWORD) && !text.contains("MESHNET_PASSWORD="),
            "the router's {what} holds the password: {text:?}"
        );
    }
    assert_eq!(
        report(h1)["Router"]["Encryption"],
        true,
        "no password in use"
    );

    // Secrets and the control socket are closed to others.
    assert_eq!(mode(h1.data_dir()), 0o700, "data dir");
    assert_eq!(
        mode(&h1.data_dir().join("identity.key")),
        0o600,
        "identity.key"
    );
    let socket = h1.run_dir().join("meshnet-api.sock");
    let group = Command::new("getent")
        .args(["group", "meshnet"])
        .output()
        .expect("getent")
        .status
        .success();
    assert_eq!(mode(&socket), if group { 0o660 } else { 0o600 }, "socket");
    // Let nobody walk to the socket, so only its own mode stops them.
    let mut dir = h1.run_dir().to_path_buf();
    while dir.starts_with(lab.dir()) {
        let m = mode(&dir);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m | 0o711)).unwrap();
        if !dir.pop() {
            break;
        }
    }

    // An unprivileged user reads status, but cannot change state: not with
    // the CLI, not on the socket, not on TCP.
    let bin = meshnet_bin();
    let bin = bin.to_str().unwrap();
    let status = as_nobody(h1, &[bin, "status"]);
    assert!(
        status.status.success() && String::from_utf8_lossy(&status.stdout).contains("Encryption"),
        "nobody cannot read status: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let connect = as_nobody(h1, &[bin, "connect", INTRUDER_PEER]);
    let err = String::from_utf8_lossy(&connect.stderr);
    assert!(
        !connect.status.success() && err.contains("needs root"),
        "nobody's connect: {} {err}",
        connect.status
    );
    let sock = socket.to_str().unwrap();
    let direct = as_nobody(
        h1,
        &[
            "curl",
            "-s",
            "--unix-socket",
            sock,
            "-X",
            "POST",
            "http://x/connect?peer=192.0.2.77",
        ],
    );
    assert!(
        !direct.status.success(),
        "nobody reached the control socket"
    );
    for nobody in [true, false] {
        for (method, path) in [
            ("POST", "/connect?peer=192.0.2.77"),
            ("POST", "/ip/intruder"),
            ("DELETE", "/peer"),
            ("GET", "/ring"),
        ] {
            let (code, body) = curl(h1, nobody, &["-X", method, &format!("http://{API}{path}")]);
            assert_eq!(
                code, "403",
                "{method} {path} on TCP (nobody: {nobody}): {body}"
            );
            assert!(body.contains("meshnet-api.sock"), "{body}");
        }
    }
    assert!(
        !targets(h1).iter().any(|t| t.contains(INTRUDER_PEER)),
        "a refused call changed the targets"
    );

    // DNS rebinding: a page's own name in Host is refused, loopback is not.
    let (code, body) = curl(
        h1,
        true,
        &["-H", "Host: evil.example", &format!("http://{API}/status")],
    );
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("evil.example"), "{body}");
    let (code, _) = curl(
        h1,
        true,
        &[
            "-H",
            "Host: evil.example:6782",
            "http://127.0.0.1:6782/metrics",
        ],
    );
    assert_eq!(code, "403", "status address with a foreign Host");
    let (code, _) = curl(h1, true, &[&format!("http://{API}/metrics")]);
    assert_eq!(code, "200");
    let (code, _) = curl(
        h1,
        true,
        &["-H", "Host: localhost", &format!("http://{API}/report")],
    );
    assert_eq!(code, "200");

    // Root changes state through the socket, with the same CLI.
    meshnet_ok(h1, &["connect", INTRUDER_PEER]);
    assert!(
        targets(h1).iter().any(|t| t.contains(INTRUDER_PEER)),
        "root's connect did not take"
    );
    meshnet_ok(h1, &["forget", INTRUDER_PEER]);
}

#[test]
fn a_foreground_router_given_the_password_in_its_environment_drops_it() {
    require_root();
    let lab = lab_on_one_segment("localfg", &["h1"]);
    let h1 = lab.host("h1");
    // As systemd would run it: attached, password in the environment.
    let log = std::fs::File::create(lab.dir().join("fg.log")).expect("log");
    let mut child = h1
        .command(&["launch", "--foreground", "--nickname", "h1"])
        .env("MESHNET_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("starting a foreground router");
    let ready = meshnet_tests::wait_for(
        "the foreground router to answer",
        std::time::Duration::from_secs(30),
        || meshnet_tests::try_report(h1).map_err(|e| e.to_string()),
    );
    assert_eq!(ready["Router"]["Encryption"], true, "no password in use");
    let pid = h1.router_pid().expect("router pid");
    for file in ["environ", "cmdline"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{file}")).expect(file);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PASSWORD),
            "the foreground router's {file} holds the password: {text:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}
