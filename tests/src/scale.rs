//! Many real routers at once: a lab of `n` hosts on one segment, each router launched
//! against the first one (discovery makes the full mesh), and what the scale scenarios
//! read from them: established links and connection terminations per router (its
//! `/metrics`, read inside its host), resident memory and CPU time (`/proc/<pid>`).
//!
//! Used by the `mesh_scale` test (a few routers, bounded waits) and by the
//! `scale-routers` benchmark (50 routers; `benches/README.md`). Everything lives in a
//! [`TestLab`], so a failing run still removes every namespace, link and router.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::{TestLab, control_addr, join, lab_with, launch, spawn_in};

/// The lab segment: a /24 holds the routers at .1, .2, ...
const SEGMENT: &str = "192.0.2.0/24";
/// Most routers one segment holds (its usable host addresses).
pub const MAX_ROUTERS: usize = 254;
/// The status port inside every host, where `/metrics` is served.
const STATUS_PORT: u16 = 6782;
/// Bound on one `/metrics` read (a router on a loaded machine answers slowly).
const METRICS_TIMEOUT: Duration = Duration::from_secs(10);
/// How often [`RouterMesh::wait_full`] samples every router.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Linux reports process times in USER_HZ ticks, which the ABI fixes at 100 per second.
const USER_HZ: u64 = 100;

/// What one router reports about its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSample {
    /// Connections in state `established` (`weave_connections{state="established"}`).
    pub established: usize,
    /// Connections terminated since launch (`weave_connection_terminations_total`).
    pub terminations: u64,
}

/// One sample of every router, in host order; `Err` says why a router could not be read.
pub type Samples = Vec<Result<LinkSample, String>>;

/// The fewest and most established links in `samples` (an unreadable router counts as 0).
pub fn min_max_links(samples: &Samples) -> (usize, usize) {
    let links = samples
        .iter()
        .map(|s| s.as_ref().map_or(0, |s| s.established));
    let min = links.clone().min().unwrap_or(0);
    (min, links.max().unwrap_or(0))
}

/// Terminations summed over every readable router.
pub fn terminations(samples: &Samples) -> u64 {
    samples.iter().flatten().map(|s| s.terminations).sum()
}

/// `n` hosts `r1..rn` on one segment, their routers not launched yet.
#[derive(Debug)]
pub struct RouterMesh {
    lab: TestLab,
    hosts: Vec<String>,
}

impl RouterMesh {
    /// Builds the lab: one segment, `routers` hosts at 192.0.2.1, .2, ... running `bin`.
    pub fn new(tag: &str, routers: usize, bin: PathBuf) -> anyhow::Result<RouterMesh> {
        anyhow::ensure!(
            (2..=MAX_ROUTERS).contains(&routers),
            "{routers} routers: use 2 to {MAX_ROUTERS} (one segment)"
        );
        let mut lab = lab_with(tag, bin);
        let seg = lab.add_segment(SEGMENT)?;
        let mut hosts = Vec::with_capacity(routers);
        for i in 1..=routers {
            let name = format!("r{i}");
            let last = u8::try_from(i)?;
            lab.add_host(&name, &[(seg, Ipv4Addr::new(192, 0, 2, last))])?;
            hosts.push(name);
        }
        Ok(RouterMesh { lab, hosts })
    }

    /// How many routers.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether there are none (never: `new` wants two at least).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The lab (hosts, their logs).
    pub fn lab(&self) -> &TestLab {
        &self.lab
    }

    /// Launches `r1`, then every other router with `r1` as its only target, one after
    /// another, each with `args` and its host name as nickname; `progress` is told after
    /// each launch. Panics (through [`launch`]) if a launch fails.
    pub fn launch_all(&self, args: &[&str], mut progress: impl FnMut(usize)) {
        let seed = control_addr(self.lab.host(&self.hosts[0]));
        for (i, name) in self.hosts.iter().enumerate() {
            let mut a: Vec<&str> = vec!["--nickname", name];
            a.extend_from_slice(args);
            if i > 0 {
                a.push(&seed);
            }
            launch(self.lab.host(name), &a);
            progress(i + 1);
        }
    }

    /// Every router's links, read at once (one thread per host).
    pub fn sample(&self) -> Samples {
        let threads: Vec<_> = self
            .hosts
            .iter()
            .map(|h| spawn_in(self.lab.host(h).netns(), read_links))
            .collect();
        threads.into_iter().map(join).collect()
    }

    /// Samples every [`SAMPLE_INTERVAL`] until every router has a link to every other one,
    /// for at most `timeout`. `Ok` holds how long it took and that sample; `Err` the last
    /// sample.
    pub fn wait_full(&self, timeout: Duration) -> Result<(Duration, Samples), Samples> {
        let start = Instant::now();
        let want = self.len() - 1;
        loop {
            let samples = self.sample();
            if min_max_links(&samples).0 == want {
                return Ok((start.elapsed(), samples));
            }
            if start.elapsed() >= timeout {
                return Err(samples);
            }
            std::thread::sleep(SAMPLE_INTERVAL);
        }
    }

    /// Samples every [`SAMPLE_INTERVAL`] for `period`; the fewest and most links any sample
    /// showed, and the last sample.
    pub fn watch(&self, period: Duration) -> ((usize, usize), Samples) {
        let start = Instant::now();
        let (mut lo, mut hi) = (usize::MAX, 0);
        loop {
            let samples = self.sample();
            let (min, max) = min_max_links(&samples);
            (lo, hi) = (lo.min(min), hi.max(max));
            if start.elapsed() >= period {
                return ((lo, hi), samples);
            }
            std::thread::sleep(SAMPLE_INTERVAL);
        }
    }

    /// The routers' pids, in host order; `Err` names a host without a live router.
    pub fn pids(&self) -> Result<Vec<i32>, String> {
        self.hosts
            .iter()
            .map(|h| {
                let host = self.lab.host(h);
                host.router_pid()
                    .filter(|_| host.router_running())
                    .ok_or_else(|| format!("{h}: no running router"))
            })
            .collect()
    }
}

/// Reads `/metrics` from the router of the namespace this thread is in.
fn read_links() -> Result<LinkSample, String> {
    let text = http_get(STATUS_PORT, "/metrics")?;
    parse_links(&text)
}

/// The established links and terminations a `/metrics` text reports.
pub fn parse_links(text: &str) -> Result<LinkSample, String> {
    let mut established = 0;
    let mut terminations = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("weave_connections{")
            && rest.contains("state=\"established\"")
        {
            let v = rest.rsplit(' ').next().unwrap_or("");
            established += v
                .parse::<usize>()
                .map_err(|_| format!("bad metric line {line:?}"))?;
        } else if let Some(v) = line.strip_prefix("weave_connection_terminations_total ") {
            terminations = Some(
                v.trim()
                    .parse()
                    .map_err(|_| format!("bad metric line {line:?}"))?,
            );
        }
    }
    Ok(LinkSample {
        established,
        terminations: terminations.ok_or("no weave_connection_terminations_total in /metrics")?,
    })
}

/// `GET path` on 127.0.0.1:`port` of the current namespace; the body of a 200 answer.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), METRICS_TIMEOUT)
        .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))?;
    s.set_read_timeout(Some(METRICS_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(METRICS_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("sending GET {path}: {e}"))?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .map_err(|e| format!("reading GET {path}: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("GET {path}: no HTTP answer: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("GET {path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_owned())
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time `pid` has used (user + system, all threads), from `/proc/<pid>/stat`.
pub fn cpu_time(pid: i32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after `(comm)`: state is field 3, utime 14 and stime 15 (1-based).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// The median of `values` (the upper one of an even count); 0 for none.
pub fn median<T: Copy + Ord + Default>(values: &[T]) -> T {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// The kernel's neighbour (ARP) table thresholds, raised while this lives and put back
/// on drop. The table is shared by every namespace: fifty hosts that all talk to each
/// other overflow the default 1024 entries ("neighbor table overflow").
#[derive(Debug)]
pub struct NeighbourLimits {
    old: Vec<(PathBuf, String)>,
}

/// `net.ipv4.neigh.default.gc_thresh1/2/3` while a large lab runs.
pub const NEIGH_THRESHOLDS: [(&str, u64); 3] = [
    ("gc_thresh1", 4096),
    ("gc_thresh2", 8192),
    ("gc_thresh3", 16384),
];

impl NeighbourLimits {
    /// Raises each threshold to [`NEIGH_THRESHOLDS`] (never lowers one).
    pub fn raise() -> anyhow::Result<NeighbourLimits> {
        let mut limits = NeighbourLimits { old: Vec::new() };
        for (name, want) in NEIGH_THRESHOLDS {
            let path = PathBuf::from("/proc/sys/net/ipv4/neigh/default").join(name);
            let old = std::fs::read_to_string(&path)?.trim().to_owned();
            if old.parse::<u64>().is_ok_and(|v| v >= want) {
                continue;
            }
            std::fs::write(&path, want.to_string())?;
            limits.old.push((path, old));
        }
        Ok(limits)
    }
}

impl Drop for NeighbourLimits {
    fn drop(&mut self) {
        // gc_thresh1 <= 2 <= 3 must hold at every step: restore from the top down.
        for (path, old) in self.old.iter().rev() {
            if let Err(e) = std::fs::write(path, old) {
                eprintln!("restoring {}: {e}", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_terminations_are_read_from_metrics() {
        let text = "# HELP weave_connections x\n\
            weave_connections{state=\"established\",type=\"fastdp\",encryption=\"\"} 5\n\
            weave_connections{state=\"established\",type=\"sleeve\",encryption=\"\"} 2\n\
            weave_connections{state=\"failed\",type=\"unknown\",encryption=\"\"} 4\n\
            weave_connection_terminations_total 3\n";
        assert_eq!(
            parse_links(text),
            Ok(LinkSample {
                established: 7,
                terminations: 3
            })
        );
        assert!(parse_links("weave_connections{state=\"established\"} 1\n").is_err());
    }

    #[test]
    fn min_max_and_median() {
        let s: Samples = vec![
            Ok(LinkSample {
                established: 3,
                terminations: 1,
            }),
            Err("down".into()),
            Ok(LinkSample {
                established: 5,
                terminations: 2,
            }),
        ];
        assert_eq!(min_max_links(&s), (0, 5));
        assert_eq!(terminations(&s), 3);
        assert_eq!(median(&[5, 1, 3]), 3);
        assert_eq!(median::<u64>(&[]), 0);
    }

    #[test]
    fn own_cpu_time_and_rss_are_read() {
        let me = std::process::id() as i32;
        assert!(rss_bytes(me).is_some_and(|b| b > 0));
        assert!(cpu_time(me).is_some());
        assert_eq!(rss_bytes(i32::MAX), None);
    }
}
