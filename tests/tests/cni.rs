//! The CNI plugin driven as the spec's reference tool drives it: the
//! `meshnet` binary under its plugin names (symlinks in a temp CNI bin
//! dir), `CNI_*` variables, the configuration on stdin, pod namespaces
//! made by the test. Hosts are lab namespaces, each with its own router
//! (found through `MESHNET_HTTP_ADDR`/`MESHNET_RUN_DIR`/`MESHNET_DATA_DIR`,
//! as the CLI finds it). Chaining uses Debian's `portmap` from
//! containernetworking-plugins (`/usr/lib/cni`).
//!
//! Needs root, `ip`, `ping`, and containernetworking-plugins installed.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use meshnet_tests::{
    Host, TestLab, in_netns, lab_on_one_segment, launch, meshnet_bin, require_root, wait_for,
};
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(60);
/// Where Debian's containernetworking-plugins lives.
const DEBIAN_CNI_DIR: &str = "/usr/lib/cni";

/// A temp CNI bin dir: `meshnet`, `weave-net`, `meshnet-ipam` pointing at
/// the binary under test, and Debian's plugins.
fn bin_dir(lab: &TestLab) -> PathBuf {
    let dir = lab.dir().join("cni-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["meshnet", "weave-net", "meshnet-ipam"] {
        std::os::unix::fs::symlink(meshnet_bin(), dir.join(name)).unwrap();
    }
    for name in ["portmap", "host-local"] {
        let p = Path::new(DEBIAN_CNI_DIR).join(name);
        assert!(
            p.is_file(),
            "{} is missing: install containernetworking-plugins (apt-get install containernetworking-plugins)",
            p.display()
        );
        std::os::unix::fs::symlink(&p, dir.join(name)).unwrap();
    }
    dir
}

/// One plugin run: exit status, stdout parsed (if JSON), stderr.
#[derive(Debug)]
struct Run {
    ok: bool,
    out: Value,
    raw: String,
    err: String,
}

impl Run {
    fn expect_ok(self, what: &str) -> Value {
        assert!(self.ok, "{what} failed: {}\nstderr: {}", self.raw, self.err);
        self.out
    }

    fn expect_code(self, what: &str, code: u64) -> Value {
        assert!(!self.ok, "{what} should fail, printed {}", self.raw);
        assert_eq!(self.out["code"], code, "{what}: wrong code in {}", self.raw);
        assert!(
            self.out["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: no msg in {}",
            self.raw
        );
        self.out
    }
}

/// Invokes `plugin` from `bins` inside `host`'s namespace.
fn cni(host: &Host, bins: &Path, plugin: &str, env: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", host.netns()])
        .arg(bins.join(plugin))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MESHNET_RUN_DIR", host.run_dir())
        .env("MESHNET_DATA_DIR", host.data_dir())
        .env("MESHNET_HTTP_ADDR", "127.0.0.1:6784")
        .env("CNI_PATH", bins)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("running the plugin");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let raw = String::from_utf8_lossy(&stdout).into_owned();
    Run {
        ok: status.success(),
        out: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        err: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn conf(version: &str) -> Value {
    json!({"cniVersion": version, "name": "meshnet", "type": "meshnet", "hairpinMode": true})
}

/// A pod: its namespace and the env of its attachment.
struct Pod {
    netns: String,
    path: String,
    id: String,
    args: String,
}

impl Pod {
    fn new(lab: &mut TestLab, host: &str, name: &str) -> Pod {
        let netns = lab.add_container(host, name).unwrap();
        Pod {
            path: format!("/run/netns/{netns}"),
            netns,
            id: format!("{name}0123456789abcdef"),
            args: format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"),
        }
    }

    fn env<'a>(&'a self, command: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", &self.id),
            ("CNI_NETNS", &self.path),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", &self.args),
        ]
    }

    fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .args(argv)
            .output()
            .unwrap()
    }
}

fn pod_ip(result: &Value) -> Ipv4Addr {
    let addr = result["ips"][0]["address"]
        .as_str()
        .expect("an address in the result");
    addr.split('/').next().unwrap().parse().unwrap()
}

fn with_prev(mut c: Value, prev: &Value) -> String {
    c["prevResult"] = prev.clone();
    c.to_string()
}

fn pings(pod: &Pod, to: Ipv4Addr) {
    wait_for(
        &format!("{} answering pings from {}", to, pod.netns),
        CONVERGE,
        || {
            let out = pod.exec(&["ping", "-n", "-c", "1", "-W", "1", &to.to_string()]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        },
    );
}

/// What the router's IPAM holds for `id` (`GET /ip/<id>`, asked inside the host).
fn ipam_holds(host: &Host, id: &str) -> String {
    let req = format!("GET /ip/{id} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    in_netns(host, move || {
        let mut s = TcpStream::connect("127.0.0.1:6784").expect("the router's API");
        s.write_all(req.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_owned()
    })
}

/// Two hosts whose routers peer and serve DNS on their underlay address
/// (with an empty resolv.conf: no query ever leaves the lab).
fn two_hosts(tag: &str) -> TestLab {
    require_root();
    let lab = lab_on_one_segment(tag, &["host1", "host2"]);
    let resolv = lab.dir().join("resolv.conf");
    std::fs::write(&resolv, "").unwrap();
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    for (h, peer) in [(h1, h2), (h2, h1)] {
        let flags = [
            format!("--dns-listen-address={}:53", h.addr()),
            format!("--resolv-conf={}", resolv.display()),
            peer.addr().to_string(),
        ];
        launch(h, &flags);
    }
    lab
}

#[test]
fn pods_on_two_hosts_ping_then_check_and_del() {
    let mut lab = two_hosts("cni-two");
    let bins = bin_dir(&lab);
    let a = Pod::new(&mut lab, "host1", "a");
    let b = Pod::new(&mut lab, "host2", "b");
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    let c = conf("1.1.0").to_string();
    let ra = cni(h1, &bins, "meshnet", &a.env("ADD"), &c).expect_ok("ADD a");
    // weave's name for the plugin works the same.
    let rb = cni(h2, &bins, "weave-net", &b.env("ADD"), &c).expect_ok("ADD b");
    for r in [&ra, &rb] {
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert!(
            r["interfaces"][1]["mtu"]
                .as_u64()
                .is_some_and(|m| m >= 1280),
            "{r}"
        );
    }
    assert_eq!(ra["interfaces"][1]["sandbox"], a.path.as_str());
    let (ipa, ipb) = (pod_ip(&ra), pod_ip(&rb));
    assert_ne!(ipa, ipb);
    // The gateway is on the bridge and the pod routes through it.
    let gw = ra["ips"][0]["gateway"].as_str().unwrap().to_owned();
    let routes = String::from_utf8_lossy(&a.exec(&["ip", "route"]).stdout).into_owned();
    assert!(
        routes.contains(&format!("default via {gw} dev eth0")),
        "{routes}"
    );
    let hairpin = h1
        .exec(&[
            "cat",
            &format!(
                "/sys/class/net/{}/brport/hairpin_mode",
                ra["interfaces"][0]["name"].as_str().unwrap()
            ),
        ])
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&hairpin.stdout).trim(), "1");

    pings(&a, ipb);
    pings(&b, ipa);
    // The pods' names are in the mesh's DNS, on the other host too.
    let looked_up = |host: &Host, name: &str| {
        let out = host.meshnet(&["dns-lookup", name]).unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    wait_for("b's name on host1", CONVERGE, || {
        let got = looked_up(h1, "b");
        if got == ipb.to_string() {
            Ok(())
        } else {
            Err(got)
        }
    });

    let check = with_prev(conf("1.1.0"), &ra);
    let ok = cni(h1, &bins, "meshnet", &a.env("CHECK"), &check);
    assert!(
        ok.ok && ok.raw.trim().is_empty(),
        "CHECK after ADD: {} {}",
        ok.raw,
        ok.err
    );
    assert!(a.exec(&["ip", "link", "del", "eth0"]).status.success());
    let e =
        cni(h1, &bins, "meshnet", &a.env("CHECK"), &check).expect_code("CHECK without eth0", 102);
    assert!(e["msg"].as_str().unwrap().contains("eth0"), "{e}");

    assert!(ipam_holds(h2, &b.id).contains(&ipb.to_string()));
    let del = with_prev(conf("1.1.0"), &rb);
    for n in 1..=2 {
        let r = cni(h2, &bins, "meshnet", &b.env("DEL"), &del);
        assert!(r.ok, "DEL #{n}: {} {}", r.raw, r.err);
    }
    assert!(
        !ipam_holds(h2, &b.id).contains(&ipb.to_string()),
        "DEL must free the address"
    );
    assert_eq!(looked_up(h2, "b"), "", "DEL must remove the pod's name");
    let links = String::from_utf8_lossy(&b.exec(&["ip", "-o", "link"]).stdout).into_owned();
    assert!(!links.contains("eth0"), "{links}");
    // DEL without netns (the runtime lost it) still succeeds.
    let env: Vec<_> = a
        .env("DEL")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    let r = cni(h1, &bins, "meshnet", &env, &conf("1.1.0").to_string());
    assert!(r.ok, "DEL without CNI_NETNS: {} {}", r.raw, r.err);
}

#[test]
fn gc_removes_a_leaked_attachment() {
    let mut lab = two_hosts("cni-gc");
    let bins = bin_dir(&lab);
    let keep = Pod::new(&mut lab, "host1", "keep");
    let leak = Pod::new(&mut lab, "host1", "leak");
    let h1 = lab.host("host1");
    let c = conf("1.1.0").to_string();
    let rk = cni(h1, &bins, "meshnet", &keep.env("ADD"), &c).expect_ok("ADD keep");
    let rl = cni(h1, &bins, "meshnet", &leak.env("ADD"), &c).expect_ok("ADD leak");
    let leaked_ip = pod_ip(&rl).to_string();
    assert!(ipam_holds(h1, &leak.id).contains(&leaked_ip));
    let mut gc = conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": keep.id, "ifname": "eth0"}]);
    let r = cni(
        h1,
        &bins,
        "meshnet",
        &[("CNI_COMMAND", "GC")],
        &gc.to_string(),
    );
    assert!(r.ok, "GC: {} {}", r.raw, r.err);
    assert!(
        !ipam_holds(h1, &leak.id).contains(&leaked_ip),
        "GC must free the leaked address"
    );
    let links = String::from_utf8_lossy(&leak.exec(&["ip", "-o", "link"]).stdout).into_owned();
    assert!(
        !links.contains("eth0"),
        "GC must remove the leaked interface: {links}"
    );
    let check = with_prev(conf("1.1.0"), &rk);
    let ok = cni(h1, &bins, "meshnet", &keep.env("CHECK"), &check);
    assert!(
        ok.ok,
        "the valid attachment survives GC: {} {}",
        ok.raw, ok.err
    );
}

#[test]
fn version_status_and_bad_input_answer_as_the_spec_says() {
    require_root();
    let mut lab = lab_on_one_segment("cni-errors", &["host1"]);
    let bins = bin_dir(&lab);
    let pod = Pod::new(&mut lab, "host1", "p");
    let h1 = lab.host("host1");

    let v = cni(
        h1,
        &bins,
        "meshnet",
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    )
    .expect_ok("VERSION");
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["supportedVersions"],
        json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    );

    let e = cni(h1, &bins, "weave-net", &pod.env("ADD"), "{\"cniVersion\": ")
        .expect_code("malformed config", 6);
    assert!(e["details"].as_str().unwrap().contains("JSON"), "{e}");
    let e = cni(
        h1,
        &bins,
        "meshnet",
        &pod.env("ADD"),
        &conf("2.7.0").to_string(),
    )
    .expect_code("unknown cniVersion", 1);
    assert!(e["details"].as_str().unwrap().contains("2.7.0"), "{e}");
    let no_netns: Vec<_> = pod
        .env("ADD")
        .into_iter()
        .filter(|(k, _)| *k != "CNI_NETNS")
        .collect();
    let e = cni(h1, &bins, "meshnet", &no_netns, &conf("1.1.0").to_string())
        .expect_code("missing CNI_NETNS", 4);
    assert!(e["msg"].as_str().unwrap().contains("CNI_NETNS"), "{e}");
    let mut gw = conf("1.1.0");
    gw["isGateway"] = json!(true);
    let e = cni(h1, &bins, "meshnet", &pod.env("ADD"), &gw.to_string()).expect_code("isGateway", 2);
    assert!(e["msg"].as_str().unwrap().contains("isGateway"), "{e}");

    // No router yet: STATUS says unavailable, ADD says try again.
    let e = cni(
        h1,
        &bins,
        "meshnet",
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0").to_string(),
    )
    .expect_code("STATUS without router", 50);
    assert!(e["msg"].as_str().unwrap().contains("not running"), "{e}");
    cni(
        h1,
        &bins,
        "meshnet",
        &pod.env("ADD"),
        &conf("1.1.0").to_string(),
    )
    .expect_code("ADD without router", 11);
    launch(h1, &["--ipalloc-init", "consensus=1"]);
    let r = cni(
        h1,
        &bins,
        "meshnet",
        &[("CNI_COMMAND", "STATUS")],
        &conf("1.1.0").to_string(),
    );
    assert!(r.ok, "STATUS with a router: {} {}", r.raw, r.err);
    // An old spec version gets an old-style result.
    let r = cni(
        h1,
        &bins,
        "meshnet",
        &pod.env("ADD"),
        &conf("0.3.1").to_string(),
    )
    .expect_ok("ADD 0.3.1");
    assert_eq!(r["cniVersion"], "0.3.1");
    assert_eq!(r["ips"][0]["version"], "4");
    // And the IPAM plugin on its own.
    let ipam_conf = json!({"cniVersion": "1.0.0", "name": "other", "type": "bridge",
                           "ipam": {"type": "meshnet-ipam"}});
    let other = Pod::new(&mut lab, "host1", "q");
    let h1 = lab.host("host1");
    let r = cni(
        h1,
        &bins,
        "meshnet-ipam",
        &other.env("ADD"),
        &ipam_conf.to_string(),
    )
    .expect_ok("meshnet-ipam ADD");
    assert!(
        r.get("interfaces").is_none(),
        "IPAM results have no interfaces: {r}"
    );
    let ip = pod_ip(&r).to_string();
    assert!(ipam_holds(h1, &other.id).contains(&ip));
    let d = cni(
        h1,
        &bins,
        "meshnet-ipam",
        &other.env("DEL"),
        &ipam_conf.to_string(),
    );
    assert!(d.ok, "meshnet-ipam DEL: {} {}", d.raw, d.err);
    assert!(!ipam_holds(h1, &other.id).contains(&ip));
}

#[test]
fn portmap_chained_after_meshnet_reaches_the_pod() {
    let mut lab = two_hosts("cni-portmap");
    let bins = bin_dir(&lab);
    let pod = Pod::new(&mut lab, "host1", "web");
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    let r = cni(
        h1,
        &bins,
        "meshnet",
        &pod.env("ADD"),
        &conf("1.0.0").to_string(),
    )
    .expect_ok("ADD");
    let pm = json!({"cniVersion": "1.0.0", "name": "meshnet", "type": "portmap", "snat": true,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]},
        "prevResult": r});
    let r2 = cni(h1, &bins, "portmap", &pod.env("ADD"), &pm.to_string()).expect_ok("portmap ADD");
    assert_eq!(pod_ip(&r2), pod_ip(&r), "portmap passes the result through");

    // A server in the pod, a client on the other host dialling host1's port.
    let listener = in_netns_of(&pod.netns, || TcpListener::bind("0.0.0.0:80").unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello from the pod\n").unwrap();
    });
    let target = format!("{}:18080", h1.addr());
    let got = in_netns(h2, move || {
        wait_for("the hostPort to answer", CONVERGE, || {
            let mut s =
                TcpStream::connect_timeout(&target.parse().unwrap(), Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
            let mut buf = String::new();
            s.read_to_string(&mut buf).map_err(|e| e.to_string())?;
            Ok::<_, String>(buf)
        })
    });
    server.join().unwrap();
    assert_eq!(got, "hello from the pod\n");
    let pm_del = cni(h1, &bins, "portmap", &pod.env("DEL"), &pm.to_string());
    assert!(pm_del.ok, "portmap DEL: {} {}", pm_del.raw, pm_del.err);
    let del = with_prev(conf("1.0.0"), &r2);
    let d = cni(h1, &bins, "meshnet", &pod.env("DEL"), &del);
    assert!(d.ok, "DEL: {} {}", d.raw, d.err);
}

/// Runs `f` on a thread inside the named namespace (sockets it opens live there).
fn in_netns_of<T: Send + 'static>(netns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

#[test]
fn setup_cni_installs_into_temp_dirs_and_the_installed_plugin_serves_pods() {
    require_root();
    let mut lab = lab_on_one_segment("cni-setup", &["host1"]);
    let pod = Pod::new(&mut lab, "host1", "p");
    let h1 = lab.host("host1");
    let (conf_dir, bins) = (lab.dir().join("net.d"), lab.dir().join("bin"));
    let out = Command::new(meshnet_bin())
        .args(["setup-cni", "--conf-dir"])
        .arg(&conf_dir)
        .arg("--bin-dir")
        .arg(&bins)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup-cni: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value =
        serde_json::from_slice(&std::fs::read(conf_dir.join("10-meshnet.conflist")).unwrap())
            .unwrap();
    assert_eq!(list["plugins"][1]["type"], "portmap");
    std::os::unix::fs::symlink(
        Path::new(DEBIAN_CNI_DIR).join("portmap"),
        bins.join("portmap"),
    )
    .unwrap();
    for name in ["weave-net", "meshnet-ipam"] {
        let v = cni(h1, &bins, name, &[("CNI_COMMAND", "VERSION")], "{}").expect_ok(name);
        assert_eq!(v["cniVersion"], "1.1.0");
    }
    // Run the list as a runtime would: each plugin with name and cniVersion
    // of the list, portmap with its runtimeConfig and the previous result.
    launch(h1, &["--ipalloc-init", "consensus=1"]);
    let mut prev = Value::Null;
    for plugin in list["plugins"].as_array().unwrap() {
        let mut p = plugin.clone();
        p["name"] = list["name"].clone();
        p["cniVersion"] = list["cniVersion"].clone();
        if p["type"] == "portmap" {
            p["runtimeConfig"] = json!({"portMappings": [{"hostPort": 18081, "containerPort": 80, "protocol": "tcp"}]});
        }
        if !prev.is_null() {
            p["prevResult"] = prev.clone();
        }
        let ty = p["type"].as_str().unwrap().to_owned();
        prev = cni(h1, &bins, &ty, &pod.env("ADD"), &p.to_string()).expect_ok(&ty);
    }
    assert_eq!(prev["interfaces"][1]["name"], "eth0");
    for plugin in list["plugins"].as_array().unwrap().iter().rev() {
        let mut p = plugin.clone();
        p["name"] = list["name"].clone();
        p["cniVersion"] = list["cniVersion"].clone();
        p["prevResult"] = prev.clone();
        let ty = p["type"].as_str().unwrap().to_owned();
        let r = cni(h1, &bins, &ty, &pod.env("DEL"), &p.to_string());
        assert!(r.ok, "DEL {ty}: {} {}", r.raw, r.err);
    }
}

#[test]
fn ipam_delegated_to_debians_host_local() {
    let mut lab = two_hosts("cni-hostlocal");
    let bins = bin_dir(&lab);
    let pod = Pod::new(&mut lab, "host1", "hl");
    let h1 = lab.host("host1");
    let store = lab.dir().join("host-local");
    let mut c = conf("1.0.0");
    c["ipam"] = json!({"type": "host-local", "subnet": "10.99.0.0/24", "dataDir": store});
    let r =
        cni(h1, &bins, "meshnet", &pod.env("ADD"), &c.to_string()).expect_ok("ADD via host-local");
    let ip = pod_ip(&r);
    assert!(ip.to_string().starts_with("10.99.0."), "{r}");
    // host-local names the gateway (.1); the bridge gets it, the pod reaches it.
    let gw = r["ips"][0]["gateway"]
        .as_str()
        .expect("host-local's gateway")
        .to_owned();
    pings(&pod, gw.parse().unwrap());
    let held = store.join("meshnet").join(ip.to_string());
    assert!(held.is_file(), "host-local recorded {ip}");
    let d = cni(
        h1,
        &bins,
        "meshnet",
        &pod.env("DEL"),
        &with_prev(c.clone(), &r),
    );
    assert!(d.ok, "DEL: {} {}", d.raw, d.err);
    assert!(
        !held.exists(),
        "DEL reached host-local, which released {ip}"
    );
}
