//! `meshnet demo`: three hosts in network namespaces on this machine, on a
//! TEST-NET underlay, routers launched as a chain (host2 → host1, host3 →
//! host2) that discover each other into a full mesh. Prints what a user
//! would type and see, then removes everything it made.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::lab::Lab;

const HOSTS: [(&str, &str, Option<&str>); 3] = [
    ("host1", "192.0.2.1", None),
    ("host2", "192.0.2.2", Some("192.0.2.1")),
    ("host3", "192.0.2.3", Some("192.0.2.2")),
];

/// Runs the demo.
pub fn run() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the demo creates network namespaces: run it as root (sudo meshnet demo)");
    }
    let exe = std::env::current_exe().context("finding the meshnet executable")?;
    Lab::sweep_stale();
    let mut lab = Lab::new("demo", exe)?;
    let result = demo(&mut lab);
    lab.cleanup();
    println!("\nThe demo's namespaces, processes and files are removed.");
    result
}

fn demo(lab: &mut Lab) -> Result<()> {
    println!("Creating three hosts (network namespaces) on underlay 192.0.2.0/24 ...");
    let seg = lab.add_segment("192.0.2.0/24")?;
    for (name, addr, _) in HOSTS {
        lab.add_host(name, &[(seg, addr.parse()?)])?;
    }
    for (name, _, peer) in HOSTS {
        let mut args = vec!["launch", "--nickname", name];
        args.extend(peer);
        println!("\n{name}$ meshnet {}", args.join(" "));
        let out = lab.host(name).meshnet(&args)?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!(
                "launch on {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    println!("\nWaiting for the chain to become a full mesh (peers of peers are discovered) ...");
    let started = Instant::now();
    loop {
        if full_mesh(lab)? {
            println!("Full mesh after {:.1} s.", started.elapsed().as_secs_f64());
            break;
        }
        if started.elapsed() > Duration::from_secs(30) {
            println!("Not a full mesh after 30 s; showing the state anyway.");
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for args in [
        vec!["status"],
        vec!["status", "peers"],
        vec!["status", "connections"],
    ] {
        show(lab, "host3", &args)?;
    }

    println!("\nOne container (a network namespace) per host, attached with an address from IPAM:");
    let mut addrs = Vec::new();
    for (name, _, _) in HOSTS {
        let ct = lab.add_container(name, &format!("{name}c"))?;
        let arg = format!("netns:{ct}");
        println!("\n{name}$ meshnet attach {arg}");
        let out = lab.host(name).meshnet(&["attach", &arg])?;
        let ip = String::from_utf8_lossy(&out.stdout).trim().to_string();
        println!("{ip}");
        if !out.status.success() {
            bail!(
                "attach on {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        addrs.push((ct, ip));
    }
    show(lab, "host1", &["ps"])?;
    let (from, _) = &addrs[0];
    for (_, ip) in &addrs[1..] {
        println!("\nhost1's container$ ping -c 2 {ip}");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", from, "ping", "-c", "2", "-W", "2", ip])
            .output()
            .context("running ping (is iputils-ping installed?)")?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            bail!("ping {ip} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    crate::demo_docker::run(lab, &["host1", "host3"])?;
    Ok(())
}

fn show(lab: &Lab, host: &str, args: &[&str]) -> Result<()> {
    println!("\n{host}$ meshnet {}", args.join(" "));
    let out = lab.host(host).meshnet(args)?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// Every host knows 3 peers and has 2 established connections.
fn full_mesh(lab: &Lab) -> Result<bool> {
    for (name, _, _) in HOSTS {
        let out = lab.host(name).meshnet(&["report"])?;
        let Ok(report) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return Ok(false);
        };
        let peers = report["Router"]["Peers"].as_array().map_or(0, Vec::len);
        let established = report["Router"]["Connections"].as_array().map_or(0, |c| {
            c.iter().filter(|c| c["State"] == "established").count()
        });
        if peers != 3 || established != 2 {
            return Ok(false);
        }
    }
    Ok(true)
}
