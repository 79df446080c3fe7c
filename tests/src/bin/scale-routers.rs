//! The real-router scale benchmark: launches `--routers N` (default 50) routers, one per
//! network namespace, each against the first, and prints `scaleN: NAME = VALUE UNIT`
//! lines: how long after the last launch every router had a link to every other one,
//! the fewest and most links per router then and over a further hold period, and each
//! router's idle CPU (% of one core) and resident memory. `benches/README.md` says how
//! to run it and what each figure is.
//!
//! Needs root. Runs the `meshnet` next to this executable (`cargo build --release -p
//! meshnet --bins` first), or `$MESHNET_BIN`. The lab removes every namespace, link and
//! router when the run ends, also on failure; the kernel's neighbour table limits are
//! raised for the run and put back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshnet_tests::require_root;
use meshnet_tests::scale::{
    NeighbourLimits, RouterMesh, Samples, cpu_time, median, min_max_links, rss_bytes, terminations,
};

/// Defaults, each overridable on the command line.
const DEFAULT_ROUTERS: usize = 50;
/// The goal is 60 s after the last launch; wait longer to report how long it took.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(180);
/// Quiet time between full connectivity and the CPU window (the last deltas, IPAM and
/// DNS state settle).
const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
/// The idle CPU window: nobody polls the routers meanwhile.
const DEFAULT_IDLE: Duration = Duration::from_secs(30);
/// How long links are watched after the CPU window.
const DEFAULT_HOLD: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: scale-routers [--routers N] [--deadline SECS] [--settle SECS] \
                     [--idle SECS] [--hold SECS]";

#[derive(Debug)]
struct Args {
    routers: usize,
    deadline: Duration,
    settle: Duration,
    idle: Duration,
    hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        routers: DEFAULT_ROUTERS,
        deadline: DEFAULT_DEADLINE,
        settle: DEFAULT_SETTLE,
        idle: DEFAULT_IDLE,
        hold: DEFAULT_HOLD,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let n: u64 = value
            .parse()
            .map_err(|_| format!("{flag} {value}: not a number\n{USAGE}"))?;
        let secs = Duration::from_secs(n);
        match flag.as_str() {
            "--routers" => a.routers = usize::try_from(n).map_err(|e| e.to_string())?,
            "--deadline" => a.deadline = secs,
            "--settle" => a.settle = secs,
            "--idle" => a.idle = secs,
            "--hold" => a.hold = secs,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    if a.idle.is_zero() {
        return Err(format!("--idle must be at least 1 s\n{USAGE}"));
    }
    Ok(a)
}

/// `$MESHNET_BIN`, else the `meshnet` beside this executable (same profile).
fn meshnet_bin() -> Result<PathBuf, String> {
    let bin = match std::env::var_os("MESHNET_BIN") {
        Some(b) => PathBuf::from(b),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("meshnet"),
    };
    if !bin.is_file() {
        return Err(format!(
            "no meshnet binary at {}: run `cargo build --release -p meshnet --bins` first, or set MESHNET_BIN",
            bin.display()
        ));
    }
    Ok(bin)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Routers that are not fully linked, for the log: `r25: 46 links`.
fn short_of(samples: &Samples, want: usize) -> String {
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match s {
            Ok(s) if s.established == want => {}
            Ok(s) => out.push(format!("r{}: {} links", i + 1, s.established)),
            Err(e) => out.push(format!("r{}: {e}", i + 1)),
        }
    }
    out.join(", ")
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    require_root();
    let bin = meshnet_bin().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let n = args.routers;
    let want = n - 1;
    let out = |name: &str, value: String, unit: &str| println!("scale{n}: {name} = {value} {unit}");
    eprintln!(
        "{n} routers running {}; load average {}",
        bin.display(),
        load_average()
    );

    // Declared first, so it is dropped (the limits put back) after the lab is gone.
    let _limits = NeighbourLimits::raise().expect("raising the neighbour table limits");
    let mesh = RouterMesh::new("scale", n, bin).expect("building the lab");

    let started = Instant::now();
    mesh.launch_all(&[], |i| {
        if i % 10 == 0 || i == n {
            eprintln!(
                "launched {i}/{n} after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    });
    out("routers", n.to_string(), "routers");
    out(
        "launch_s",
        format!("{:.1}", started.elapsed().as_secs_f64()),
        "s",
    );

    let samples = match mesh.wait_full(args.deadline) {
        Ok((took, samples)) => {
            out(
                "full_connectivity_s",
                format!("{:.1}", took.as_secs_f64()),
                "s",
            );
            samples
        }
        Err(samples) => {
            out(
                "full_connectivity_s",
                "none".into(),
                &format!("(not within {} s)", args.deadline.as_secs()),
            );
            eprintln!("short of {want} links: {}", short_of(&samples, want));
            samples
        }
    };
    let (min, max) = min_max_links(&samples);
    out("links_min", min.to_string(), "links");
    out("links_max", max.to_string(), "links");
    let terminated_before = terminations(&samples);

    std::thread::sleep(args.settle);
    let pids = mesh.pids().expect("every router running");
    let before: Vec<Option<Duration>> = pids.iter().map(|p| cpu_time(*p)).collect();
    let window = Instant::now();
    std::thread::sleep(args.idle);
    let after: Vec<Option<Duration>> = pids.iter().map(|p| cpu_time(*p)).collect();
    let elapsed = window.elapsed();
    // Hundredths of a percent, so the median is taken over integers.
    let cpu: Vec<u64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => (a.saturating_sub(*b).as_secs_f64() / elapsed.as_secs_f64()
                * 10_000.0)
                .round() as u64,
            _ => panic!("a router went away during the idle window"),
        })
        .collect();
    let pct = |v: u64| format!("{:.2}", v as f64 / 100.0);
    out(
        "idle_cpu_pct_max",
        pct(cpu.iter().copied().max().unwrap_or(0)),
        "%",
    );
    out("idle_cpu_pct_median", pct(median(&cpu)), "%");
    let rss: Vec<u64> = pids
        .iter()
        .map(|p| rss_bytes(*p).expect("reading a router's RSS"))
        .collect();
    let mb = |b: u64| format!("{:.1}", b as f64 / 1e6);
    out(
        "rss_max_mb",
        mb(rss.iter().copied().max().unwrap_or(0)),
        "MB",
    );
    out("rss_median_mb", mb(median(&rss)), "MB");

    let ((lo, hi), last) = mesh.watch(args.hold);
    out("hold_links_min", lo.to_string(), "links");
    out("hold_links_max", hi.to_string(), "links");
    out(
        "hold_terminations",
        terminations(&last)
            .saturating_sub(terminated_before)
            .to_string(),
        "connections",
    );
    if lo < want {
        eprintln!(
            "at the end, short of {want} links: {}",
            short_of(&last, want)
        );
    }
    eprintln!(
        "total {:.0} s; load average {}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
