//! The `weave` name: the same binary, invoked through a symlink called
//! `weave` (made by `meshnet setup`), takes weave's command line — the
//! commands and flags are meshnet's, which follow weave's — and answers as
//! weave's script does where scripts notice: the usage text in weave's
//! layout, exit status 1 for a usage error, weave's messages for unknown and
//! removed commands. Invoked as `meshnet`, nothing changes.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::error::ErrorKind;

/// The name that selects weave's behaviour.
pub const NAME: &str = "weave";

/// The exit status of weave's script for a usage error (clap uses 2).
pub const USAGE_EXIT: u8 = 1;

/// Commands weave 2.0 removed; its script names them in the error.
pub const REMOVED: [&str; 9] = [
    "run",
    "start",
    "restart",
    "launch-plugin",
    "stop-plugin",
    "launch-proxy",
    "stop-proxy",
    "launch-router",
    "stop-router",
];

/// `weave --help`, in the layout of weave's script, listing what this
/// binary accepts.
pub const USAGE: &str = "\
Usage:

weave --help | help
      setup
      version

weave launch        [--password <pass>] [--trusted-subnets <cidr>,...]
                    [--host <ip_address>] [--port <port>]
                    [--name <mac>] [--nickname <nickname>]
                    [--no-restart] [--resume] [--no-discovery] [--no-dns]
                    [--dns-listen-address <address>:<port>]
                    [--dns-domain <domain>] [--dns-ttl <seconds>]
                    [--resolv-conf <path>]
                    [--ipalloc-init <mode>]
                    [--ipalloc-range <cidr> [--ipalloc-default-subnet <cidr>]]
                    [--plugin=false] [--proxy=false] [-H <endpoint>]
                    [--no-default-ipalloc] [--rewrite-inspect]
                    [--without-dns] [--no-multicast-route] [--no-rewrite-hosts]
                    [--hostname-from-label <labelkey>]
                    [--hostname-match <regexp>]
                    [--hostname-replacement <replacement>]
                    [--log-level=debug|info|warning|error]
                    [--token <token>] [--no-detect-tls]
                    [--mtu <mtu>] [--no-fastdp] [--conn-limit <n>]
                    <peer> ...

weave prime

weave env           [--restore]
      config
      dns-args

weave connect       [--replace] [<peer> ...]
      forget        <peer> ...

weave attach        [--no-multicast-route] [<addr> ...] <container_id>
      detach        [<addr> ...] <container_id>

weave expose        [<addr> ...] [-h <fqdn>] [--without-masquerade]
      hide          [<addr> ...]

weave dns-add       [<ip_address> ...] <container_id> [-h <fqdn>] |
                    <ip_address> ... -h <fqdn>
      dns-remove    [<ip_address> ...] <container_id> [-h <fqdn>] |
                    <ip_address> ... -h <fqdn>
      dns-lookup    <unqualified_name>

weave status        [targets | connections | peers | dns | ipam]
      report        [-f <format>]
      ps            [<container_id> ...]

weave stop

weave reset         [--force]
      rmpeer        <peer_id> ...

where <peer>     = <ip_address_or_fqdn>[:<port>]
      <cidr>     = <ip_address>/<routing_prefix_length>
      <addr>     = [ip:]<cidr> | net:<cidr> | net:default
      <peer_id>  = <nickname> | <weave internal peer ID>
      <mode>     = consensus[=<count>] | seed=<mac>,... | observer

This is meshnet answering to the name weave; `weave help <command>` shows a
command's flags, `meshnet --help` the rest.
";

/// How the binary was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Meshnet,
    Weave,
}

impl Flavour {
    /// From `argv[0]`: `weave` (any directory) means weave.
    pub fn of(argv0: Option<&OsStr>) -> Flavour {
        match argv0.and_then(|a| Path::new(a).file_name()) {
            Some(n) if n == NAME => Flavour::Weave,
            _ => Flavour::Meshnet,
        }
    }

    /// The name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Meshnet => "meshnet",
            Flavour::Weave => NAME,
        }
    }

    /// The command-line definition for this flavour.
    pub fn command(self) -> clap::Command {
        let cmd = <crate::args::Cli as clap::CommandFactory>::command();
        match self {
            Flavour::Meshnet => cmd,
            Flavour::Weave => cmd.name(NAME).bin_name(NAME).override_help(USAGE),
        }
    }

    /// Reports a command-line error the way this flavour does, and the exit
    /// status to end with.
    pub fn usage_error(self, err: clap::Error, argv: &[std::ffi::OsString]) -> ExitCode {
        if self == Flavour::Meshnet {
            err.exit();
        }
        match err.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                let _ = err.print();
                if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(USAGE_EXIT)
                } else {
                    ExitCode::SUCCESS
                }
            }
            ErrorKind::InvalidSubcommand => {
                let cmd = argv
                    .iter()
                    .skip(1)
                    .map(|a| a.to_string_lossy())
                    .find(|a| !a.starts_with('-'))
                    .unwrap_or_default();
                if REMOVED.contains(&cmd.as_ref()) {
                    eprintln!(
                        "The 'weave {cmd}' command has been removed as of Weave Net version 2.0"
                    );
                } else {
                    eprintln!("Unknown weave command '{cmd}'");
                    eprint!("{USAGE}");
                }
                ExitCode::from(USAGE_EXIT)
            }
            _ => {
                let _ = err.print();
                ExitCode::from(USAGE_EXIT)
            }
        }
    }
}

/// `meshnet setup`: makes the `weave` symlink to this binary in `dir`
/// (default: the binary's own directory). Returns the link's path.
pub fn setup(dir: Option<&Path>) -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .and_then(|e| e.canonicalize())
        .context("finding the meshnet executable")?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => exe
            .parent()
            .context("the meshnet executable has no directory")?
            .to_path_buf(),
    };
    make_link(&exe, &dir)
}

/// Links `dir/weave` to `exe`; an existing link to it is kept, anything
/// else there is left alone and reported.
pub fn make_link(exe: &Path, dir: &Path) -> Result<PathBuf> {
    let link = dir.join(NAME);
    match std::fs::read_link(&link) {
        Ok(target) if target == exe => return Ok(link),
        Ok(target) => bail!(
            "{} already links to {}; remove it to link it to meshnet, or pass --link-dir DIR",
            link.display(),
            target.display()
        ),
        Err(_) if link.symlink_metadata().is_ok() => bail!(
            "{} exists and is not a link (a real weave?); it is left alone: remove it, or pass --link-dir DIR",
            link.display()
        ),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(exe, &link).with_context(|| {
        format!(
            "creating the link {} -> {} (run as root, or pass --link-dir DIR)",
            link.display(),
            exe.display()
        )
    })?;
    Ok(link)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;

    #[test]
    fn argv0_selects_the_flavour() {
        let of = |s: &str| Flavour::of(Some(OsStr::new(s)));
        assert_eq!(of("weave"), Flavour::Weave);
        assert_eq!(of("/usr/local/bin/weave"), Flavour::Weave);
        assert_eq!(of("./weave"), Flavour::Weave);
        assert_eq!(of("meshnet"), Flavour::Meshnet);
        assert_eq!(of("/usr/bin/weaver"), Flavour::Meshnet);
        assert_eq!(Flavour::of(None), Flavour::Meshnet);
    }

    #[test]
    fn weave_usage_lists_every_command_it_names() {
        let cmd = Flavour::Weave.command();
        // Every `weave X` / `      X` entry in the usage is a real command.
        for line in USAGE.lines() {
            let word = line
                .strip_prefix("weave ")
                .or_else(|| line.strip_prefix("      "))
                .and_then(|r| r.split_whitespace().next());
            let Some(word) = word.filter(|w| {
                w.starts_with(|c: char| c.is_ascii_lowercase())
                    && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            }) else {
                continue;
            };
            if word == "help" {
                continue;
            }
            assert!(
                cmd.find_subcommand(word).is_some(),
                "usage names `{word}`, which is no command"
            );
        }
        // And every flag it shows for launch parses.
        let argv = [
            "weave",
            "launch",
            "--password=x",
            "--trusted-subnets=10.0.0.0/8",
            "--host=0.0.0.0",
            "--port=6783",
            "--name=8a:3e:3e:3e:3e:3e",
            "--nickname=n",
            "--no-restart",
            "--resume",
            "--no-discovery",
            "--no-dns",
            "--dns-listen-address=127.0.0.1:5353",
            "--dns-domain=weave.local.",
            "--dns-ttl=1",
            "--resolv-conf=/etc/resolv.conf",
            "--ipalloc-init=observer",
            "--ipalloc-range=10.32.0.0/12",
            "--ipalloc-default-subnet=10.32.0.0/16",
            "--plugin=false",
            "--proxy=false",
            "--no-default-ipalloc",
            "--rewrite-inspect",
            "--without-dns",
            "--no-multicast-route",
            "--mtu=1400",
            "--no-fastdp",
            "--conn-limit=10",
            "--no-rewrite-hosts",
            "--hostname-from-label=hostname-label",
            "--hostname-match=^[^-]+-(?P<appname>[^-]*)-[^-]+$",
            "--hostname-replacement=$appname",
            "--log-level=warning",
            "--token=t0k3n",
            "--no-detect-tls",
            "-H",
            "unix:///run/weave/weave.sock",
            "-Htcp://0.0.0.0:12375",
        ];
        cmd.try_get_matches_from(argv)
            .expect("weave's launch flags");
    }

    #[test]
    fn weave_usage_errors_exit_1() {
        let argv: Vec<OsString> = ["weave", "bogus"].iter().map(OsString::from).collect();
        let err = Flavour::Weave
            .command()
            .try_get_matches_from(&argv)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSubcommand);
        assert_eq!(
            Flavour::Weave.usage_error(err, &argv),
            ExitCode::from(USAGE_EXIT)
        );
    }

    #[test]
    fn setup_links_once_and_leaves_other_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("meshnet");
        std::fs::write(&exe, "").unwrap();
        let link = make_link(&exe, dir.path()).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), exe);
        // Again: fine, same link.
        assert_eq!(make_link(&exe, dir.path()).unwrap(), link);
        // A real file called weave is not replaced.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("weave"), "#!/bin/sh\n").unwrap();
        let err = make_link(&exe, other.path()).unwrap_err().to_string();
        assert!(err.contains("left alone"), "{err}");
        assert_eq!(
            std::fs::read_to_string(other.path().join("weave")).unwrap(),
            "#!/bin/sh\n"
        );
    }
}
