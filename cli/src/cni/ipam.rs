//! Addresses for a pod: from the router's IPAM (the `meshnet-ipam` plugin,
//! and what the network plugin does itself when `ipam.type` is empty or
//! ours), or from another IPAM plugin found on `CNI_PATH` (delegation, spec
//! §4: same environment, same configuration, its stderr passed through).
//!
//! IPAM holds a pod's addresses under its `CNI_CONTAINERID`, without
//! weave's `check-alive`: only DEL or GC gives them back.

use std::io::Write;
use std::process::Stdio;

use http::Method;
use ipnet::{IpNet, Ipv4Net};
use meshnet_router::addrspec::{AddrSpec, IpamAnswerError};
use meshnet_router::api_client::CallError;

use super::types::{CniResult, IpConfig, NetConf};
use super::{CniError, CniResultOf, Command, Invocation, code, runtime, store};
use crate::args::EnvArgs;
use crate::client;

/// Whether `ipam.type` names the router's IPAM (or is empty).
pub fn is_ours(conf: &NetConf) -> bool {
    conf.ipam.as_ref().is_none_or(|i| {
        i.plugin_type.is_empty() || super::IPAM_PLUGIN_NAMES.contains(&i.plugin_type.as_str())
    })
}

/// Maps a failure to reach the router onto CNI codes: not running is
/// transient (the DaemonSet may be starting), anything else is the router's.
pub fn call_error(e: anyhow::Error) -> CniError {
    match e.downcast_ref::<CallError>() {
        Some(CallError::NotRunning(_) | CallError::NoSocket(_)) => {
            CniError::new(code::TRY_AGAIN, "the meshnet router is not running")
                .details(format!("{e:#}"))
        }
        _ => CniError::new(code::ROUTER, "cannot talk to the meshnet router")
            .details(format!("{e:#}")),
    }
}

/// Asks the router for the pod's address (`ipam.subnet`, or `net:default`)
/// and returns the IPAM-style result: the address, `ipam.gateway`,
/// `ipam.routes` and the configuration's `dns`.
pub async fn allocate(conf: &NetConf, container_id: &str, env: &EnvArgs) -> CniResultOf<CniResult> {
    let ipam = conf.ipam.clone().unwrap_or_default();
    let spec = match ipam.subnet.as_deref() {
        None | Some("") => AddrSpec::Default,
        Some(s) => match format!("net:{s}").parse::<AddrSpec>() {
            Ok(spec) => spec,
            Err(e) => {
                return Err(CniError::new(code::INVALID_CONFIG, "invalid ipam.subnet")
                    .details(e.to_string()));
            }
        },
    };
    let (method, path) = spec.request(container_id, false);
    let answer = client::call_async(env.api(), method, &path, &[])
        .await
        .map_err(call_error)?;
    let (cidr, _) = spec.answer(answer.status.as_u16(), &answer.body).map_err(|e| match e {
        IpamAnswerError::Disabled => CniError::new(code::ROUTER, "the router's IPAM is off").details(
            "the router runs with --ipalloc-range \"\": launch it with a range, or name another IPAM plugin in ipam.type",
        ),
        e => CniError::new(code::ROUTER, format!("IPAM could not give {container_id} an address")).details(e.to_string()),
    })?;
    Ok(CniResult {
        ips: vec![IpConfig {
            version: None,
            address: IpNet::V4(cidr),
            gateway: ipam.gateway,
            interface: None,
            other: Default::default(),
        }],
        routes: ipam.routes,
        dns: conf.dns.clone(),
        ..Default::default()
    })
}

/// Hands back every address IPAM holds for the container. "No addresses"
/// and IPAM being off are success: DEL must be idempotent.
pub async fn release(env: &EnvArgs, container_id: &str) -> CniResultOf<()> {
    let answer = client::call_async(
        env.api(),
        Method::DELETE,
        &format!("/ip/{container_id}"),
        &[],
    )
    .await
    .map_err(call_error)?;
    let fine = answer.status.is_success()
        || answer.status.as_u16() == 404
        || answer.body.contains("no addresses");
    if fine {
        Ok(())
    } else {
        Err(CniError::new(
            code::ROUTER,
            format!("IPAM would not release {container_id}'s addresses"),
        )
        .details(answer.body.trim().to_owned()))
    }
}

/// The addresses IPAM holds for the container.
pub async fn held(env: &EnvArgs, container_id: &str) -> CniResultOf<Vec<Ipv4Net>> {
    let answer = client::call_async(env.api(), Method::GET, &format!("/ip/{container_id}"), &[])
        .await
        .map_err(call_error)?;
    if !answer.status.is_success() {
        return Ok(Vec::new());
    }
    Ok(answer
        .body
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect())
}

/// Runs the IPAM plugin named in `ipam.type` with `command`, the same
/// environment and configuration; returns its result for ADD.
pub fn delegate(
    command: Command,
    conf: &NetConf,
    inv: &Invocation,
) -> CniResultOf<Option<CniResult>> {
    let name = conf
        .ipam
        .as_ref()
        .map(|i| i.plugin_type.clone())
        .unwrap_or_default();
    if name.contains('/') || name.is_empty() {
        return Err(CniError::new(code::INVALID_CONFIG, "invalid ipam.type")
            .details(format!("{name:?} is not a plugin name")));
    }
    let exe = inv
        .path
        .iter()
        .map(|d| d.join(&name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(code::DELEGATE, format!("IPAM plugin {name} not found")).details(format!(
                "looked in CNI_PATH ({}); install it there or fix ipam.type",
                std::env::join_paths(&inv.path)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ))
        })?;
    let verb = match command {
        Command::Add => "ADD",
        Command::Del => "DEL",
        Command::Check => "CHECK",
        Command::Status => "STATUS",
        Command::Gc => "GC",
        Command::Version => "VERSION",
    };
    let input = serde_json::to_vec(conf).unwrap_or_default();
    let failed = |e: std::io::Error| {
        CniError::new(
            code::DELEGATE,
            format!("cannot run IPAM plugin {}", exe.display()),
        )
        .details(e.to_string())
    };
    let mut child = std::process::Command::new(&exe)
        .env("CNI_COMMAND", verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&input).map_err(failed)?;
    }
    let out = child.wait_with_output().map_err(failed)?;
    if !out.status.success() {
        // Its error object, passed on as it is (code and message).
        let err: Option<super::types::ErrorResult> = serde_json::from_slice(&out.stdout).ok();
        return Err(match err {
            Some(e) => CniError {
                code: e.code,
                msg: format!("{name}: {}", e.msg),
                details: e.details,
            },
            None => CniError::new(
                code::DELEGATE,
                format!("IPAM plugin {name} failed ({})", out.status),
            )
            .details(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
        });
    }
    if command != Command::Add {
        return Ok(None);
    }
    serde_json::from_slice(&out.stdout).map(Some).map_err(|e| {
        CniError::new(
            code::DELEGATE,
            format!("IPAM plugin {name} printed no result"),
        )
        .details(e.to_string())
    })
}

/// The `meshnet-ipam` plugin itself.
pub fn run_plugin(
    command: Command,
    conf: &NetConf,
    inv: &Invocation,
    env: &EnvArgs,
) -> CniResultOf<Option<String>> {
    let rt = runtime()?;
    rt.block_on(async {
        match command {
            Command::Add => {
                let id = inv.container_id()?;
                let ifname = inv.ifname()?;
                let result = allocate(conf, id, env)
                    .await?
                    .for_version(&conf.cni_version);
                let ips = result.ips.iter().filter_map(|i| match i.address {
                    IpNet::V4(a) => Some(a),
                    IpNet::V6(_) => None,
                });
                store::record(env, &store::Record::ipam(conf, id, ifname, ips.collect()));
                Ok(Some(serde_json::to_string(&result).unwrap_or_default()))
            }
            Command::Del => {
                let id = inv.container_id()?;
                release(env, id).await?;
                store::forget(env, &conf.name, id, inv.ifname.as_deref().unwrap_or(""));
                Ok(None)
            }
            Command::Check => {
                let id = inv.container_id()?;
                let prev = conf
                    .prev_result
                    .as_ref()
                    .ok_or_else(super::net::no_prev_result)?;
                let have = held(env, id).await?;
                for ip in &prev.ips {
                    if let IpNet::V4(a) = ip.address
                        && !have.contains(&a)
                    {
                        return Err(CniError::new(
                            code::CHECK_FAILED,
                            format!("IPAM no longer holds {a} for {id}"),
                        ));
                    }
                }
                Ok(None)
            }
            Command::Status => super::net::status_of_router(env, true).await.map(|_| None),
            Command::Gc => super::net::gc_records(conf, env, None).await.map(|_| None),
            Command::Version => Ok(None),
        }
    })
}
