//! The Docker part of `meshnet demo`, when an engine and the `busybox`
//! image are present: on two of the demo's hosts, `eval $(meshnet env)` and
//! `docker run` through each host's proxy; the containers come up with
//! `ethwe` and ping each other across the mesh. Removes its containers.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::env::proxy_url;
use crate::lab::Lab;

/// The image the demo runs (scripts/busybox-image builds it locally).
const IMAGE: &str = "busybox";

/// Why the Docker part is skipped, if it is.
fn unavailable() -> Option<String> {
    match Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", IMAGE])
        .env_remove("DOCKER_HOST")
        .output()
    {
        Err(_) => Some("the docker command is not installed".into()),
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "Docker or the {IMAGE} image is not available ({}); scripts/busybox-image builds the image",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
    }
}

fn docker(docker_host: Option<&str>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    match docker_host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    let out = cmd.output().context("running docker")?;
    if !out.status.success() {
        bail!(
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the Docker variant on `hosts` (at least two, routers running);
/// prints why when it cannot.
pub fn run(lab: &Lab, hosts: &[&str]) -> Result<()> {
    if let Some(why) = unavailable() {
        println!("\n(Skipping the Docker part of the demo: {why}.)");
        return Ok(());
    }
    let tag = std::process::id();
    let names: Vec<String> = hosts
        .iter()
        .map(|h| format!("meshnet-demo-{tag}-{h}"))
        .collect();
    let result = show(lab, hosts, &names);
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    let _ = docker(None, &rm);
    result
}

fn show(lab: &Lab, hosts: &[&str], names: &[String]) -> Result<()> {
    println!("\nDocker through each host's proxy (eval $(meshnet env)):");
    let mut ips = Vec::new();
    for (host, name) in hosts.iter().zip(names) {
        let proxy = proxy_url(lab.host(host).run_dir());
        println!("\n{host}$ eval $(meshnet env)   # export DOCKER_HOST={proxy} ...");
        println!("{host}$ docker run -dit --name {name} {IMAGE}");
        docker(Some(&proxy), &["run", "-dit", "--name", name, IMAGE])?;
        println!("{host}$ docker exec {name} ip -4 addr show ethwe");
        let shown = docker(None, &["exec", name, "ip", "-4", "addr", "show", "ethwe"])?;
        print!("{shown}");
        let ip = shown
            .split_whitespace()
            .skip_while(|w| *w != "inet")
            .nth(1)
            .and_then(|c| c.split('/').next())
            .map(str::to_string)
            .with_context(|| format!("{name} has no address on ethwe: {shown}"))?;
        ips.push(ip);
    }
    if let (Some(first), Some(last)) = (names.first(), ips.last()) {
        println!("\n{}$ docker exec {first} ping -c 2 {last}", hosts[0]);
        print!(
            "{}",
            docker(None, &["exec", first, "ping", "-c", "2", "-W", "2", last])?
        );
    }
    Ok(())
}
