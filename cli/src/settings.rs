//! Settings that come from the environment under two names: ours
//! (`MESHNET_*`) and weave's (`WEAVE_PASSWORD`, `WEAVE_MTU`, ...), so a
//! weave user's environment keeps working.
//!
//! Precedence, highest first: the command-line flag, our variable, weave's
//! variable, the built-in default. A variable set to the empty string
//! counts as unset (weave's script tests its variables with `[ -n ]`).
//! clap does not read these variables itself (one `env` name per flag), so
//! [`apply`] runs after parsing, on the matches that say which flags were
//! given.

use anyhow::{Result, anyhow};
use clap::ArgMatches;
use clap::parser::ValueSource;

use crate::args::{Cli, Command, LaunchArgs};

/// One setting: the clap id of its flag and its two variable names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The flag's clap id (the field name).
    pub id: &'static str,
    /// Our variable, which wins.
    pub ours: &'static str,
    /// Weave's variable.
    pub weave: &'static str,
}

/// The router's API address (every command).
pub const HTTP_ADDR: Setting = Setting {
    id: "http_addr",
    ours: "MESHNET_HTTP_ADDR",
    weave: "WEAVE_HTTP_ADDR",
};
/// The mesh password.
pub const PASSWORD: Setting = Setting {
    id: "password",
    ours: "MESHNET_PASSWORD",
    weave: "WEAVE_PASSWORD",
};
/// The peer port.
pub const PORT: Setting = Setting {
    id: "port",
    ours: "MESHNET_PORT",
    weave: "WEAVE_PORT",
};
/// The read-only status/metrics address.
pub const STATUS_ADDR: Setting = Setting {
    id: "status_addr",
    ours: "MESHNET_STATUS_ADDR",
    weave: "WEAVE_STATUS_ADDR",
};
/// The overlay MTU.
pub const MTU: Setting = Setting {
    id: "mtu",
    ours: "MESHNET_MTU",
    weave: "WEAVE_MTU",
};
/// Sleeve only.
pub const NO_FASTDP: Setting = Setting {
    id: "no_fastdp",
    ours: "MESHNET_NO_FASTDP",
    weave: "WEAVE_NO_FASTDP",
};
/// The IP allocation range (weave's Kubernetes and plugin-v2 name).
pub const IPALLOC_RANGE: Setting = Setting {
    id: "ipalloc_range",
    ours: "MESHNET_IPALLOC_RANGE",
    weave: "IPALLOC_RANGE",
};

/// Every setting `launch` reads; the detached router gets them as flags
/// (the password as `MESHNET_PASSWORD`), so [`crate::launch`] removes all of
/// these from its environment.
pub const LAUNCH: [Setting; 6] = [PASSWORD, PORT, STATUS_ADDR, MTU, NO_FASTDP, IPALLOC_RANGE];

/// The value of `s` from the environment, and the variable it came from.
pub fn lookup(s: Setting, get: &dyn Fn(&str) -> Option<String>) -> Option<(&'static str, String)> {
    [s.ours, s.weave]
        .into_iter()
        .find_map(|var| get(var).filter(|v| !v.is_empty()).map(|v| (var, v)))
}

/// Whether the flag was typed on the command line (in these matches or,
/// for a global flag, the subcommand's).
fn given(matches: &ArgMatches, sub: Option<&ArgMatches>, id: &str) -> bool {
    let on = |m: &ArgMatches| {
        m.try_get_raw(id).is_ok() && m.value_source(id) == Some(ValueSource::CommandLine)
    };
    on(matches) || sub.is_some_and(on)
}

/// Fills in, from the environment, every setting whose flag was not given.
pub fn apply(
    cli: &mut Cli,
    matches: &ArgMatches,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let sub = matches.subcommand().map(|(_, m)| m);
    if !given(matches, sub, HTTP_ADDR.id)
        && let Some((var, v)) = lookup(HTTP_ADDR, get)
    {
        cli.env.http_addr = v
            .parse()
            .map_err(|e| anyhow!("invalid {var}={v:?}: {e}; use IP:PORT such as 127.0.0.1:6784"))?;
    }
    if let (Command::Launch(args), Some(m)) = (&mut cli.command, sub) {
        apply_launch(args, m, get)?;
    }
    Ok(())
}

fn apply_launch(
    a: &mut LaunchArgs,
    m: &ArgMatches,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<()> {
    let from_env = |s: Setting| (!given(m, None, s.id)).then(|| lookup(s, get)).flatten();
    if let Some((_, v)) = from_env(PASSWORD) {
        a.password = Some(v);
    }
    if let Some((var, v)) = from_env(PORT) {
        a.port = v
            .parse()
            .map_err(|e| anyhow!("invalid {var}={v:?}: {e}; use a port number such as 6783"))?;
    }
    if let Some((_, v)) = from_env(STATUS_ADDR) {
        a.status_addr = v;
    }
    if let Some((var, v)) = from_env(MTU) {
        a.mtu = v
            .parse()
            .map_err(|e| anyhow!("invalid {var}={v:?}: {e}; use a number from 576 to 65535"))?;
    }
    if let Some((var, v)) = from_env(NO_FASTDP) {
        a.no_fastdp = truthy(var, &v);
    }
    if let Some((_, v)) = from_env(IPALLOC_RANGE) {
        a.ipalloc_range = v;
    }
    Ok(())
}

/// A boolean variable: weave's `WEAVE_NO_FASTDP` is on whenever it is set
/// (its script tests `[ -n ]`); ours reads like clap's booleans, so
/// `MESHNET_NO_FASTDP=false` (or 0, no, off) is off.
fn truthy(var: &str, v: &str) -> bool {
    if var.starts_with("MESHNET_") {
        !matches!(
            v.to_ascii_lowercase().as_str(),
            "0" | "n" | "no" | "f" | "false" | "off"
        )
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::{CommandFactory, FromArgMatches};

    use super::*;

    /// Parses `argv` as the real binary does, with `vars` as the environment.
    fn parse(argv: &[&str], vars: &[(&str, &str)]) -> Result<Cli> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let matches = Cli::command().try_get_matches_from(argv)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        apply(&mut cli, &matches, &|k| vars.get(k).cloned())?;
        Ok(cli)
    }

    fn launch(argv: &[&str], vars: &[(&str, &str)]) -> LaunchArgs {
        let mut full = vec!["meshnet", "launch"];
        full.extend_from_slice(argv);
        match parse(&full, vars).expect("parses").command {
            Command::Launch(a) => *a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn weave_variables_are_read() {
        let a = launch(
            &[],
            &[
                ("WEAVE_PASSWORD", "wsecret"),
                ("WEAVE_MTU", "1400"),
                ("WEAVE_NO_FASTDP", "1"),
                ("WEAVE_PORT", "7000"),
                ("WEAVE_STATUS_ADDR", "127.0.0.1:7002"),
                ("IPALLOC_RANGE", "10.40.0.0/16"),
            ],
        );
        assert_eq!(a.password.as_deref(), Some("wsecret"));
        assert_eq!(a.mtu, 1400);
        assert!(a.no_fastdp);
        assert_eq!(a.port, 7000);
        assert_eq!(a.status_addr, "127.0.0.1:7002");
        assert_eq!(a.ipalloc_range, "10.40.0.0/16");
    }

    #[test]
    fn ours_win_over_weaves() {
        let a = launch(
            &[],
            &[
                ("WEAVE_PASSWORD", "wsecret"),
                ("MESHNET_PASSWORD", "msecret"),
                ("WEAVE_MTU", "1400"),
                ("MESHNET_MTU", "1300"),
                ("WEAVE_NO_FASTDP", "1"),
                ("MESHNET_NO_FASTDP", "false"),
                ("WEAVE_PORT", "7000"),
                ("MESHNET_PORT", "7100"),
                ("IPALLOC_RANGE", "10.40.0.0/16"),
                ("MESHNET_IPALLOC_RANGE", "10.50.0.0/16"),
            ],
        );
        assert_eq!(a.password.as_deref(), Some("msecret"));
        assert_eq!(a.mtu, 1300);
        assert!(!a.no_fastdp);
        assert_eq!(a.port, 7100);
        assert_eq!(a.ipalloc_range, "10.50.0.0/16");
    }

    #[test]
    fn flags_win_over_both() {
        let a = launch(
            &[
                "--password=flag",
                "--mtu=1200",
                "--port=7200",
                "--ipalloc-range=",
            ],
            &[
                ("WEAVE_PASSWORD", "wsecret"),
                ("MESHNET_PASSWORD", "msecret"),
                ("WEAVE_MTU", "1400"),
                ("MESHNET_MTU", "1300"),
                ("MESHNET_PORT", "7100"),
                ("IPALLOC_RANGE", "10.40.0.0/16"),
            ],
        );
        assert_eq!(a.password.as_deref(), Some("flag"));
        assert_eq!(a.mtu, 1200);
        assert_eq!(a.port, 7200);
        // An explicit empty range (IPAM off) is not overridden.
        assert_eq!(a.ipalloc_range, "");
    }

    #[test]
    fn defaults_without_any_variable() {
        let a = launch(&[], &[]);
        assert_eq!(a.password, None);
        assert_eq!(a.mtu, meshnet_router::datapath::DEFAULT_MTU);
        assert!(!a.no_fastdp);
        assert_eq!(a.port, meshnet_router::config::DEFAULT_PORT);
        assert_eq!(
            a.ipalloc_range,
            meshnet_router::config::DEFAULT_IPALLOC_RANGE
        );
    }

    #[test]
    fn empty_counts_as_unset() {
        let a = launch(
            &[],
            &[
                ("MESHNET_PASSWORD", ""),
                ("WEAVE_PASSWORD", "wsecret"),
                ("WEAVE_MTU", ""),
                ("WEAVE_NO_FASTDP", ""),
            ],
        );
        assert_eq!(a.password.as_deref(), Some("wsecret"));
        assert_eq!(a.mtu, meshnet_router::datapath::DEFAULT_MTU);
        assert!(!a.no_fastdp);
    }

    #[test]
    fn weave_no_fastdp_is_on_whenever_set() {
        // weave's script: any non-empty value turns fastdp off.
        assert!(launch(&[], &[("WEAVE_NO_FASTDP", "0")]).no_fastdp);
        assert!(launch(&[], &[("MESHNET_NO_FASTDP", "yes")]).no_fastdp);
        assert!(!launch(&[], &[("MESHNET_NO_FASTDP", "0")]).no_fastdp);
    }

    #[test]
    fn http_addr_for_every_command() {
        let cli = parse(
            &["meshnet", "status"],
            &[("WEAVE_HTTP_ADDR", "127.0.0.1:7784")],
        )
        .unwrap();
        assert_eq!(cli.env.http_addr.to_string(), "127.0.0.1:7784");
        let cli = parse(
            &["meshnet", "status"],
            &[
                ("WEAVE_HTTP_ADDR", "127.0.0.1:7784"),
                ("MESHNET_HTTP_ADDR", "127.0.0.1:8784"),
            ],
        )
        .unwrap();
        assert_eq!(cli.env.http_addr.to_string(), "127.0.0.1:8784");
        // The global flag, before or after the subcommand, wins.
        for argv in [
            ["meshnet", "--http-addr=127.0.0.1:9784", "status"],
            ["meshnet", "status", "--http-addr=127.0.0.1:9784"],
        ] {
            let cli = parse(&argv, &[("MESHNET_HTTP_ADDR", "127.0.0.1:8784")]).unwrap();
            assert_eq!(cli.env.http_addr.to_string(), "127.0.0.1:9784");
        }
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = parse(&["meshnet", "launch"], &[("WEAVE_MTU", "big")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("WEAVE_MTU=\"big\""), "{err}");
        let err = parse(&["meshnet", "status"], &[("MESHNET_HTTP_ADDR", "nowhere")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("MESHNET_HTTP_ADDR"), "{err}");
    }
}
