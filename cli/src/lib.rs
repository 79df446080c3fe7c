//! The `meshnet` command: launch and talk to the router, and the demo.
//!
//! Layout: [`args`] (clap definitions), `launch` (start/stop the router
//! process), `client` (HTTP to the router's API), `demo` (a mesh in network
//! namespaces), [`lab`] (the namespace harness shared with the tests),
//! [`cni`] (the binary as a CNI plugin, chosen by its name or `CNI_COMMAND`),
//! [`settings`] (flags that weave's environment variables also set) and
//! [`weave`] (the binary invoked as `weave`).

pub mod args;
mod attach;
mod cleanup;
mod client;
pub mod cni;
mod container;
mod demo;
mod demo_docker;
mod dns;
mod docker;
mod env;
mod expose;
mod kube;
pub mod lab;
mod launch;
pub mod settings;
mod setup_cni;
pub mod weave;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::FromArgMatches;
use http::{Method, StatusCode};

use args::{Cli, Command, EnvArgs};
use weave::Flavour;

/// Entry point of the binary: `meshnet`, or `weave` through a symlink
/// (see [`weave`]).
pub fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let nargs = std::env::args_os().count();
    if let Some(role) = cni::role(&argv0, nargs, std::env::var_os("CNI_COMMAND").is_some()) {
        return cni::main(role);
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flavour = Flavour::of(argv.first().map(|a| a.as_os_str()));
    let matches = match flavour.command().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => return flavour.usage_error(e, &argv),
    };
    let parsed = Cli::from_arg_matches(&matches)
        .map_err(anyhow::Error::from)
        .and_then(|mut cli| {
            settings::apply(&mut cli, &matches, &|k| std::env::var(k).ok())?;
            Ok(cli)
        });
    match parsed.and_then(|cli| run(cli, flavour)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}: {e:#}", flavour.name());
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `level` (`launch --log-level`), else
/// `RUST_LOG`, else info.
pub fn init_logging(level: Option<&str>) {
    let filter = match level {
        Some(l) => tracing_subscriber::EnvFilter::new(l),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn run(cli: Cli, flavour: Flavour) -> Result<ExitCode> {
    let env = cli.env;
    match cli.command {
        Command::Launch(args) => {
            cleanup::require_root("launch")?;
            launch::launch(&env, *args)?
        }
        Command::Stop => {
            launch::stop(&env)?;
        }
        Command::Reset { force: _ } => {
            launch::reset(&env)?;
            cleanup::sweep()?;
        }
        Command::Status { sub, verbose } => {
            let path = match &sub {
                None => "/status".to_string(),
                Some(s) if verbose => format!("/status/{s}?verbose=true"),
                Some(s) => format!("/status/{s}"),
            };
            print_answer(&env, Method::GET, &path, &[])?;
        }
        Command::Report { format } => match format {
            None => print_answer(&env, Method::GET, "/report", &[])?,
            Some(f) => {
                let query: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("format", &f)
                    .finish();
                print_answer(&env, Method::GET, &format!("/report?{query}"), &[])?
            }
        },
        Command::Identity => print_answer(&env, Method::GET, "/identity", &[])?,
        Command::Reload => print_answer(&env, Method::POST, "/reload", &[])?,
        Command::Connect { replace, peers } => {
            for p in &peers {
                meshnet_mesh::check_peer(p).map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            let mut form: Vec<(&str, &str)> = peers.iter().map(|p| ("peer", p.as_str())).collect();
            if replace {
                form.push(("replace", "true"));
            }
            print_answer(&env, Method::POST, "/connect", &form)?;
        }
        Command::Forget { peers } => {
            let form: Vec<(&str, &str)> = peers.iter().map(|p| ("peer", p.as_str())).collect();
            print_answer(&env, Method::POST, "/forget", &form)?;
        }
        Command::Attach {
            no_multicast_route,
            args,
        } => {
            require_router(&env)?;
            attach::attach(&env, &args, !no_multicast_route)?
        }
        Command::Detach { args } => {
            require_router(&env)?;
            attach::detach(&env, &args)?
        }
        Command::Ps { containers } => {
            require_router(&env)?;
            attach::ps(&containers)?
        }
        Command::Expose {
            without_masquerade,
            fqdn,
            addrs,
            help: _,
        } => expose::expose(&env, &addrs, !without_masquerade, fqdn.as_deref())?,
        Command::Hide { addrs } => {
            require_router(&env)?;
            expose::hide(&env, &addrs)?
        }
        Command::Rmpeer { peers } => {
            for p in peers {
                print_answer(&env, Method::DELETE, &format!("/peer/{p}"), &[])?;
            }
        }
        Command::Prime => print_answer(&env, Method::GET, "/ring", &[])?,
        Command::Version => {
            let (this, router) = match flavour {
                Flavour::Meshnet => ("meshnet", "meshnet router"),
                Flavour::Weave => ("weave script", "weave"),
            };
            println!("{this} {}", env!("CARGO_PKG_VERSION"));
            if let Ok(a) = client::call(env.api(), Method::GET, "/report", &[])
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&a.body)
            {
                println!("{router} {}", v["Version"].as_str().unwrap_or("unknown"));
            }
        }
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut flavour.command(),
                flavour.name(),
                &mut std::io::stdout(),
            );
        }
        Command::Demo => demo::run()?,
        Command::Env { restore } => return Ok(env::env(&env, restore)),
        Command::Config => return Ok(env::config(&env)),
        Command::DnsAdd(a) => dns::add(&env, &a.args, a.fqdn.as_deref())?,
        Command::DnsRemove(a) => dns::remove(&env, &a.args, a.fqdn.as_deref())?,
        Command::DnsLookup { name } => dns::lookup(&env, &name)?,
        Command::DnsArgs => dns::args(&env)?,
        Command::SetupCni {
            conf_dir,
            bin_dir,
            hairpin_mode,
        } => setup_cni::run(&env, &conf_dir, &bin_dir, hairpin_mode)?,
        Command::KubePeers { node_name } => kube::kube_peers(node_name.as_deref())?,
        Command::KubeReclaim {
            node_name,
            namespace,
            configmap,
        } => kube::kube_reclaim(
            &env,
            &kube::Bookkeeping {
                namespace,
                configmap,
            },
            &node_name,
        )?,
        Command::Setup { link_dir } => {
            let link = weave::setup(link_dir.as_deref())?;
            println!("{}", link.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Fails, saying how to start it, unless the router answers.
fn require_router(env: &EnvArgs) -> Result<()> {
    client::call(env.api(), Method::GET, "/status", &[]).map(drop)
}

/// Calls the router; prints a success body to stdout, anything else to
/// stderr as an error.
fn print_answer(env: &EnvArgs, method: Method, path: &str, form: &[(&str, &str)]) -> Result<()> {
    let answer = client::call(env.api(), method, path, form)?;
    if answer.status.is_success() {
        print!("{}", answer.body);
        return Ok(());
    }
    match answer.status {
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => bail!("{}", answer.body.trim_end()),
        s => bail!("router answered {s}: {}", answer.body.trim_end()),
    }
}
