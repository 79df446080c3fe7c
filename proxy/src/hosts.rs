//! A container's names, as weave's proxy gives them: the hostname derived
//! from its name or a label (`--hostname-from-label`, then
//! `--hostname-match` / `--hostname-replacement`), and the `/etc/hosts` it
//! gets, naming its mesh addresses (unless `--no-rewrite-hosts`). Pure
//! functions, but for [`rewrite_hosts_file`].

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;

use regex::Regex;
use serde_json::Value;

/// weave's default `--hostname-match`: the whole name.
pub const DEFAULT_HOSTNAME_MATCH: &str = "(.*)";
/// weave's default `--hostname-replacement`: what the match captured.
pub const DEFAULT_HOSTNAME_REPLACEMENT: &str = "$1";

/// An invalid `--hostname-match`.
#[derive(Debug, thiserror::Error)]
#[error("invalid --hostname-match {pattern:?}: {reason}")]
pub struct BadHostnameMatch {
    pattern: String,
    reason: String,
}

/// How a created container's hostname is derived from its name.
#[derive(Debug, Clone)]
pub struct HostnameRule {
    /// `--hostname-from-label`: a label whose non-empty value replaces the name.
    pub from_label: Option<String>,
    pattern: Regex,
    replacement: String,
}

impl Default for HostnameRule {
    fn default() -> HostnameRule {
        HostnameRule::new(None, DEFAULT_HOSTNAME_MATCH, DEFAULT_HOSTNAME_REPLACEMENT)
            .unwrap_or_else(|_| unreachable!("the default pattern compiles"))
    }
}

impl HostnameRule {
    /// Compiles the rule (`pattern` is a regular expression; `replacement`
    /// names its groups `$1` or `$name`, as weave's Go regexp does).
    pub fn new(
        from_label: Option<&str>,
        pattern: &str,
        replacement: &str,
    ) -> Result<HostnameRule, BadHostnameMatch> {
        let compiled = Regex::new(pattern).map_err(|e| BadHostnameMatch {
            pattern: pattern.into(),
            reason: e.to_string(),
        })?;
        Ok(HostnameRule {
            from_label: from_label.filter(|l| !l.is_empty()).map(str::to_string),
            pattern: compiled,
            replacement: replacement.into(),
        })
    }

    /// The hostname for a create request named `name` (its `?name=`) with
    /// body `body`: the label's value when it has one, else the name, with
    /// every match of the pattern replaced. `None` when there is nothing.
    pub fn hostname(&self, name: Option<&str>, body: &Value) -> Option<String> {
        let label = self.from_label.as_deref().and_then(|key| {
            body.get("Labels")?
                .get(key)?
                .as_str()
                .filter(|v| !v.is_empty())
        });
        let base = label.or(name)?;
        let derived = self
            .pattern
            .replace_all(base, self.replacement.as_str())
            .into_owned();
        (!derived.is_empty()).then_some(derived)
    }
}

/// The `/etc/hosts` of a container named `hostname` in `domain` (empty: no
/// domain) with mesh addresses `addrs` and Docker's `--add-host` entries
/// `extra` (`name:ip`), in weave's layout.
pub fn hosts_file(hostname: &str, domain: &str, addrs: &[Ipv4Addr], extra: &[String]) -> String {
    let domain = domain.trim_end_matches('.');
    let names = if domain.is_empty() {
        hostname.to_string()
    } else {
        format!("{hostname}.{domain} {hostname}")
    };
    let mut out = String::from("# created by meshnet - BEGIN\n# container hostname\n");
    for a in addrs {
        out.push_str(&format!("{:<15} {names}\n", a.to_string()));
    }
    out.push_str("\n# static names added with --add-host\n");
    for e in extra {
        if let Some((name, ip)) = e.split_once(':') {
            out.push_str(&format!("{ip:<15} {name}\n"));
        }
    }
    out.push_str(
        "\n# default localhost entries\n\
         127.0.0.1       localhost\n\
         ::1             ip6-localhost ip6-loopback\n\
         fe00::0         ip6-localnet\n\
         ff00::0         ip6-mcastprefix\n\
         ff02::1         ip6-allnodes\n\
         ff02::2         ip6-allrouters\n\
         # created by meshnet - END\n",
    );
    out
}

/// What [`hosts_file`] needs from `GET /containers/{id}/json`: the hosts
/// file's path on this host, hostname, domain and `--add-host` entries.
pub fn hosts_inputs(inspect: &Value) -> Option<(String, String, String, Vec<String>)> {
    let path = inspect
        .get("HostsPath")?
        .as_str()
        .filter(|p| !p.is_empty())?;
    let field = |k: &str| crate::intercept::config_str(inspect, k).to_string();
    let extra =
        crate::intercept::str_slice(inspect.get("HostConfig").and_then(|h| h.get("ExtraHosts")));
    Some((path.into(), field("Hostname"), field("Domainname"), extra))
}

/// Writes `contents` into the hosts file at `path`, which the running
/// container has bind-mounted: into the same file (what the container
/// sees), then into a new file at the path, so Docker's later rewrites of
/// the path (it regenerates it on some operations) miss the container's
/// copy, and a restart mounts ours. weave does the same.
pub fn rewrite_hosts_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?
        .write_all(contents.as_bytes())?;
    std::fs::remove_file(path)?;
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_default_rule_keeps_the_name() {
        let rule = HostnameRule::default();
        for n in ["seeone", "a-b-c", "x.y", "UPPER"] {
            assert_eq!(rule.hostname(Some(n), &json!({})).as_deref(), Some(n));
        }
        assert_eq!(rule.hostname(None, &json!({})), None);
        assert_eq!(rule.hostname(Some(""), &json!({})), None);
    }

    #[test]
    fn match_and_replacement_as_weave_680() {
        let rule = HostnameRule::new(None, "^[^-]+-(?P<appname>[^-]*)-[^-]+$", "$appname").unwrap();
        let h = |n: &str| rule.hostname(Some(n), &json!({}));
        assert_eq!(
            h("qiuds71y827hdi-seeone-1io9qd9i0wd").as_deref(),
            Some("seeone")
        );
        assert_eq!(
            h("124DJKSNK812-seetwo-128hbaJ881").as_deref(),
            Some("seetwo")
        );
        assert_eq!(
            h("doesnotmatchpattern").as_deref(),
            Some("doesnotmatchpattern")
        );
        let numbered = HostnameRule::new(None, "^aws-[0-9]+-(.*)$", "my-app-$1").unwrap();
        assert_eq!(
            numbered.hostname(Some("aws-12-web"), &json!({})).as_deref(),
            Some("my-app-web")
        );
        let e = HostnameRule::new(None, "(", "$1").unwrap_err().to_string();
        assert!(e.contains("--hostname-match"), "{e}");
    }

    #[test]
    fn a_label_wins_over_the_name_when_set() {
        let rule =
            HostnameRule::new(Some("hostname-label"), "^[^-]+-([^-]*)-[^-]+$", "$1").unwrap();
        let labelled = json!({"Labels": {"hostname-label": "x-seeone-y"}});
        assert_eq!(
            rule.hostname(Some("other"), &labelled).as_deref(),
            Some("seeone")
        );
        for unlabelled in [
            json!({}),
            json!({"Labels": null}),
            json!({"Labels": {"hostname-label": ""}}),
            json!({"Labels": {"hostname-label": 3}}),
        ] {
            assert_eq!(
                rule.hostname(Some("name"), &unlabelled).as_deref(),
                Some("name"),
                "{unlabelled}"
            );
        }
        assert_eq!(rule.hostname(None, &labelled).as_deref(), Some("seeone"));
    }

    #[test]
    fn hosts_file_in_weaves_layout() {
        let addrs: Vec<Ipv4Addr> = vec!["10.2.1.1".parse().unwrap(), "10.3.0.7".parse().unwrap()];
        let text = hosts_file(
            "c1",
            "weave.local.",
            &addrs,
            &["db:10.9.9.9".into(), "bad".into()],
        );
        let want = "\
# created by meshnet - BEGIN
# container hostname
10.2.1.1        c1.weave.local c1
10.3.0.7        c1.weave.local c1

# static names added with --add-host
10.9.9.9        db

# default localhost entries
127.0.0.1       localhost
::1             ip6-localhost ip6-loopback
fe00::0         ip6-localnet
ff00::0         ip6-mcastprefix
ff02::1         ip6-allnodes
ff02::2         ip6-allrouters
# created by meshnet - END
";
        assert_eq!(text, want);
        let bare = hosts_file("c1", "", &addrs[..1], &[]);
        assert!(bare.contains("10.2.1.1        c1\n"), "{bare}");
    }

    #[test]
    fn hosts_inputs_from_inspect() {
        let inspect = json!({"HostsPath": "/var/lib/docker/containers/3f/hosts",
            "Config": {"Hostname": "c1", "Domainname": "weave.local"},
            "HostConfig": {"ExtraHosts": ["db:10.9.9.9"]}});
        assert_eq!(
            hosts_inputs(&inspect),
            Some((
                "/var/lib/docker/containers/3f/hosts".into(),
                "c1".into(),
                "weave.local".into(),
                vec!["db:10.9.9.9".into()]
            ))
        );
        assert_eq!(hosts_inputs(&json!({"HostsPath": ""})), None);
        assert_eq!(hosts_inputs(&json!({})), None);
    }

    #[test]
    fn the_running_container_keeps_seeing_the_rewritten_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        std::fs::write(&path, "172.17.0.2 c1\n").unwrap();
        // What the container has open (its bind mount holds the inode).
        let mounted = std::fs::File::open(&path).unwrap();
        rewrite_hosts_file(&path, "10.2.1.1 c1\n").unwrap();
        let mut seen = String::new();
        std::io::Read::read_to_string(&mut &mounted, &mut seen).unwrap();
        assert_eq!(seen, "10.2.1.1 c1\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "10.2.1.1 c1\n");
        // Docker writing the path later no longer reaches the container's copy.
        std::fs::write(&path, "172.17.0.2 c1\n").unwrap();
        let mut again = String::new();
        std::io::Seek::rewind(&mut &mounted).unwrap();
        std::io::Read::read_to_string(&mut &mounted, &mut again).unwrap();
        assert_eq!(again, "10.2.1.1 c1\n");
    }
}
