//! Identity scenarios against the real `meshnet` binary, each host a network
//! namespace with its own router: a peer is its static key, a second key
//! claiming a known name is refused on both ends, and `meshnet identity`
//! prints the line an authorized-keys file takes.
//!
//! Needs root and a built binary (`cargo build -p meshnet`).

use std::time::Duration;

use meshnet_tests::view::{established_with, peer};
use meshnet_tests::{
    control_addr, lab_on_one_segment, launch, meshnet_ok, report, require_root, router_log,
    wait_for,
};

/// Bound on a small mesh converging (weave's first retry comes after 2 s).
const CONVERGE: Duration = Duration::from_secs(30);
/// How many times the impostor is made to try.
const ATTEMPTS: usize = 20;

/// Lines of `log` that mention `what` (and, if given, `addr`).
fn count_lines(log: &str, what: &str, addr: Option<&str>) -> usize {
    log.lines()
        .filter(|l| l.contains(what) && addr.is_none_or(|a| l.contains(a)))
        .count()
}

#[test]
fn a_second_key_claiming_a_peers_name_never_displaces_it() {
    require_root();
    let lab = lab_on_one_segment("idname", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let h1_addr = control_addr(h1);
    let n1 = launch(h1, &["--nickname", "h1", "--no-discovery"]);
    let n2 = launch(h2, &["--nickname", "h2", "--no-discovery", &h1_addr]);
    wait_for("h1 to have h2 established", CONVERGE, || {
        established_with(&report(h1), &n2).then_some(())
    });
    let fp2 = report(h2)["Router"]["KeyFingerprint"]
        .as_str()
        .expect("report shows our key fingerprint")
        .to_owned();
    assert!(fp2.starts_with("SHA256:"), "{fp2}");
    let key_at_h1 =
        || peer(&report(h1), &n2).and_then(|p| p["KeyFingerprint"].as_str().map(str::to_owned));
    assert_eq!(key_at_h1().as_deref(), Some(fp2.as_str()));
    let verbose = meshnet_ok(h1, &["status", "peers", "-v"]);
    assert!(
        verbose.contains(&format!("{n2}(h2) key {fp2}")),
        "status peers -v on h1:\n{verbose}"
    );

    // `meshnet identity` prints exactly an authorized-keys line for h1.
    let line = meshnet_ok(h1, &["identity"]);
    let r1 = report(h1);
    let expected = format!(
        "meshnet-x25519 {} {n1}(h1)\n",
        r1["Router"]["PublicKey"].as_str().expect("public key")
    );
    assert_eq!(line, expected);

    // h3 claims h2's name with its own key.
    let n3 = launch(h3, &["--nickname", "h3", "--no-discovery", "--name", &n2]);
    assert_eq!(n3, n2);
    let h3_ip = h3.addr().to_string();
    for attempt in 1..=ATTEMPTS {
        meshnet_ok(h3, &["connect", &h1_addr]);
        wait_for(
            &format!("h1 to refuse h3's attempt {attempt}"),
            CONVERGE,
            || {
                let n = count_lines(&router_log(h1), "under key", Some(&h3_ip));
                (n >= attempt).then_some(()).ok_or(n)
            },
        );
        let r = report(h1);
        assert!(
            established_with(&r, &n2),
            "attempt {attempt}: h1 lost h2: {}",
            r["Router"]["Connections"]
        );
        assert_eq!(
            key_at_h1().as_deref(),
            Some(fp2.as_str()),
            "attempt {attempt}: h1 now binds {n2} to another key"
        );
        let to_h2 = r["Router"]["Connections"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| c["State"] == "established")
            .all(|c| c["Address"].as_str().is_some_and(|a| !a.contains(&h3_ip)));
        assert!(to_h2, "attempt {attempt}: h1 has a connection from h3");
    }
    // Both ends say why, naming the peer and what to do.
    let log1 = router_log(h1);
    let why1 = log1
        .lines()
        .find(|l| l.contains("under key") && l.contains(&h3_ip))
        .expect("h1 logs the refusal");
    assert!(
        why1.contains(&n2) && why1.contains("meshnet rmpeer") && why1.contains(&fp2),
        "{why1}"
    );
    let log3 = router_log(h3);
    let why3 = log3
        .lines()
        .find(|l| l.contains("refused by peer"))
        .unwrap_or_else(|| panic!("h3 logs the refusal:\n{log3}"));
    assert!(
        why3.contains(&n1) && why3.contains("rmpeer") && why3.contains("--name"),
        "{why3}"
    );
    assert!(
        count_lines(&log3, "refused by peer", None) >= ATTEMPTS,
        "h3 logged fewer refusals than attempts:\n{log3}"
    );
}

#[test]
fn authorized_keys_admit_listed_keys_only_and_reload_drops_removed_ones() {
    require_root();
    let lab = lab_on_one_segment("idkeys", &["h1", "h2", "h3"]);
    let (h1, h2, h3) = (lab.host("h1"), lab.host("h2"), lab.host("h3"));
    let h1_addr = control_addr(h1);
    let n2 = launch(h2, &["--nickname", "h2", "--no-discovery"]);
    let n3 = launch(h3, &["--nickname", "h3", "--no-discovery"]);
    let line2 = meshnet_ok(h2, &["identity"]);
    let keys = h1.run_dir().join("authorized_keys");

    // A bad line fails launch with its number and loses nothing.
    std::fs::write(&keys, format!("# mesh\n{line2}ssh-ed25519 AAAA bob\n")).expect("write");
    let out = h1
        .meshnet(&["launch", "--authorized-keys", &keys.to_string_lossy()])
        .expect("running launch");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "launch took a bad file: {stderr}");
    assert!(stderr.contains("line 3:"), "{stderr}");

    std::fs::write(&keys, format!("# mesh\n\n{line2}")).expect("write");
    let mut cmd = h1.command(&["launch", "--nickname", "h1", "--no-discovery"]);
    cmd.env("MESHNET_AUTHORIZED_KEYS", &keys);
    meshnet_tests::launch_with(h1, &mut cmd);
    assert_eq!(report(h1)["Router"]["AuthorizedKeys"], 1);

    meshnet_ok(h2, &["connect", &h1_addr]);
    meshnet_ok(h3, &["connect", &h1_addr]);
    wait_for("h1 to have the listed h2 established", CONVERGE, || {
        established_with(&report(h1), &n2).then_some(())
    });
    let h3_ip = h3.addr().to_string();
    wait_for("h1 to log why it refused h3", CONVERGE, || {
        router_log(h1)
            .lines()
            .find(|l| l.contains("not in --authorized-keys") && l.contains(&h3_ip))
            .map(str::to_owned)
    });
    wait_for("h3 to log why it was refused", CONVERGE, || {
        router_log(h3)
            .lines()
            .find(|l| l.contains("refused by peer") && l.contains("--authorized-keys"))
            .map(str::to_owned)
    });
    assert!(!established_with(&report(h1), &n3));

    // Remove h2's key and reload: its connection goes, and it stays out.
    std::fs::write(&keys, "# nobody\n").expect("write");
    let said = meshnet_ok(h1, &["reload"]);
    assert!(
        said.contains("0 authorized keys") && said.contains(&n2),
        "reload said: {said}"
    );
    wait_for("h1 to drop h2", CONVERGE, || {
        (!established_with(&report(h1), &n2)).then_some(())
    });
    let h2_ip = h2.addr().to_string();
    wait_for("h1 to refuse h2's retry with the reason", CONVERGE, || {
        router_log(h1)
            .lines()
            .find(|l| l.contains("not in --authorized-keys") && l.contains(&h2_ip))
            .map(str::to_owned)
    });
    assert!(!established_with(&report(h1), &n2));

    // SIGHUP re-reads the file too: h3's key listed, h3 joins.
    std::fs::write(&keys, meshnet_ok(h3, &["identity"])).expect("write");
    let pid = h1.router_pid().expect("h1 router pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    meshnet_ok(h3, &["connect", &h1_addr]);
    wait_for("h1 to have h3 established after SIGHUP", CONVERGE, || {
        established_with(&report(h1), &n3).then_some(())
    });
}
