//! A real container runtime drives the CNI plugin: Debian's podman 4.3
//! with its CNI network backend runs a container on the `meshnet` network
//! (the conflist `meshnet setup-cni` wrote) on each of two lab hosts, and
//! the two ping each other across the mesh. Podman invokes the plugin as
//! kubelet's runtimes do (libcni: ADD with the env contract, DEL on
//! removal, its own result cache).
//!
//! Every piece of podman state (storage, run root, containers.conf,
//! network config dir, events log) lives in a temp dir of the test's own; the image
//! is the local `busybox:latest` Docker image (`scripts/busybox-image`)
//! saved and loaded, so nothing talks to a registry. Podman runs with the
//! host's network namespace joined (`nsenter --net`) but in the root mount
//! namespace, where it bind-mounts its pods' namespaces under /run/netns,
//! so the test holds /tmp/meshnet-rootns.lock while it runs.
//!
//! Needs root, podman, Docker with busybox:latest, containernetworking-plugins.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use meshnet_tests::{
    Host, in_netns, lab_on_one_segment, launch, meshnet_bin, require_root, wait_for,
};

const CONVERGE: Duration = Duration::from_secs(60);

/// Podman confined to one host's namespace and one state dir.
struct Podman<'a> {
    host: &'a Host,
    dir: PathBuf,
}

impl Podman<'_> {
    fn new(host: &Host) -> Podman<'_> {
        // Podman refuses a run root longer than 50 bytes: a short dir of
        // our own (pid-unique), removed on drop; the config lives there too.
        let dir = PathBuf::from(format!("/tmp/mnp-{}-{}", std::process::id(), host.name()));
        let (net_d, bin) = (dir.join("net.d"), dir.join("bin"));
        for d in ["root", "runroot", "tmp", "volumes", "libpod"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        // The plugin as the DaemonSet's init container installs it; the
        // host's router dirs go into the conflist (they are not the defaults).
        let out = Command::new(meshnet_bin())
            .arg("setup-cni")
            .arg("--conf-dir")
            .arg(&net_d)
            .arg("--bin-dir")
            .arg(&bin)
            .env("MESHNET_RUN_DIR", host.run_dir())
            .env("MESHNET_DATA_DIR", host.data_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setup-cni: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let portmap = Path::new("/usr/lib/cni/portmap");
        assert!(
            portmap.is_file(),
            "install containernetworking-plugins (portmap)"
        );
        std::os::unix::fs::symlink(portmap, bin.join("portmap")).unwrap();
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{bin}\"]\nnetwork_config_dir = \"{net_d}\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{d}/events.log\"\n\
             tmp_dir = \"{d}/tmp\"\nvolume_path = \"{d}/volumes\"\nstatic_dir = \"{d}/libpod\"\nruntime = \"runc\"\n",
            bin = bin.display(),
            net_d = net_d.display(),
            d = dir.display()
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        std::fs::write(
            dir.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/root\"\n",
            d = dir.display()
        );
        std::fs::write(dir.join("storage.conf"), storage).unwrap();
        Podman { host, dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = &self.dir;
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host.netns()))
            .arg("podman")
            .arg(format!("--root={}", d.join("root").display()))
            .arg(format!("--runroot={}", d.join("runroot").display()))
            .arg("--storage-driver=vfs")
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .output()
            .expect("running podman (apt-get install podman)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {} on {} failed: {}{}",
            args.join(" "),
            self.host.name(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        // Containers first (CNI DEL runs), then the storage with the dir.
        let _ = self.run(&["rm", "--force", "--all", "--time", "0"]);
        let _ = self.run(&["system", "reset", "--force"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn podman_containers_on_two_hosts_ping_across_the_mesh() {
    require_root();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/meshnet-rootns.lock")
        .unwrap();
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive).unwrap();
    let lab = lab_on_one_segment("cni-podman", &["host1", "host2"]);
    let (h1, h2) = (lab.host("host1"), lab.host("host2"));
    launch(h1, &[h2.addr().to_string()]);
    launch(h2, &[h1.addr().to_string()]);

    let image = lab.dir().join("busybox.tar");
    let saved = Command::new("docker")
        .args(["save", "-o"])
        .arg(&image)
        .arg("busybox:latest")
        .output()
        .expect("running docker save");
    assert!(
        saved.status.success(),
        "no local busybox:latest image: run scripts/busybox-image first ({})",
        String::from_utf8_lossy(&saved.stderr)
    );
    let (p1, p2) = (Podman::new(h1), Podman::new(h2));
    let mut ips = Vec::new();
    for (p, name) in [(&p1, "pa"), (&p2, "pb")] {
        p.ok(&["load", "--quiet", "-i", &image.to_string_lossy()]);
        let networks = p.ok(&["network", "ls", "--format", "{{.Name}}"]);
        assert!(
            networks.lines().any(|n| n == "meshnet"),
            "podman sees no meshnet network: {networks}"
        );
        p.ok(&[
            "run",
            "-d",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=4096:4096",
            "--pull",
            "never",
            "--name",
            name,
            "--network",
            "meshnet",
            "busybox:latest",
            "sleep",
            "600",
        ]);
        let ip = p.ok(&[
            "inspect",
            "-f",
            "{{.NetworkSettings.Networks.meshnet.IPAddress}}",
            name,
        ]);
        assert!(ip.starts_with("10."), "{name} got {ip:?}");
        ips.push(ip);
    }
    for (p, name, to) in [(&p1, "pa", &ips[1]), (&p2, "pb", &ips[0])] {
        wait_for(&format!("{name} pinging {to}"), CONVERGE, || {
            let out = p.run(&["exec", name, "ping", "-c", "1", "-W", "1", to]);
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stdout).into_owned())
            }
        });
    }
    // Removing the container runs DEL: the address goes back to IPAM.
    let id = p1.ok(&["inspect", "-f", "{{.Id}}", "pa"]);
    assert!(
        ipam_holds(h1, &id).contains(&ips[0]),
        "IPAM holds pa's address under its ID"
    );
    p1.ok(&["rm", "--force", "--time", "0", "pa"]);
    assert!(
        !ipam_holds(h1, &id).contains(&ips[0]),
        "podman rm must free pa's address"
    );
}

/// What the router's IPAM holds for `id` (`GET /ip/<id>` inside the host).
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
