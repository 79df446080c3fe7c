//! `scale --peers N [--degree D] [--seed S] [--min-latency-ms A] [--max-latency-ms B]`:
//! builds an N-peer mesh in the simulator, joins one more peer and prints the figures
//! (`peers = N`, then `scale: NAME = VALUE UNIT`). See `benches/README.md`.

use std::process::ExitCode;
use std::time::Duration;

use meshnet_benches::alloc::{Counting, live_bytes};
use meshnet_benches::scale::{ScaleConfig, run};

#[global_allocator]
static ALLOC: Counting = Counting;

const USAGE: &str =
    "usage: scale --peers N [--degree D] [--seed S] [--min-latency-ms A] [--max-latency-ms B]";

fn parse(args: &[String]) -> Result<ScaleConfig, String> {
    let mut cfg = ScaleConfig::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} wants a whole number, not {v:?}; {USAGE}"))
        };
        match flag.as_str() {
            "--peers" => cfg.peers = num(value)? as usize,
            "--degree" => cfg.degree = num(value)? as usize,
            "--seed" => cfg.seed = num(value)?,
            "--min-latency-ms" => cfg.min_latency = Duration::from_millis(num(value)?),
            "--max-latency-ms" => cfg.max_latency = Duration::from_millis(num(value)?),
            other => return Err(format!("unknown option {other:?}; {USAGE}")),
        }
    }
    if cfg.min_latency > cfg.max_latency {
        return Err("--min-latency-ms is above --max-latency-ms".into());
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = std::time::Instant::now();
    match run(&cfg, live_bytes) {
        Ok(f) => {
            for line in f.lines() {
                println!("{line}");
            }
            eprintln!(
                "(join bytes by kind, all peers: {:?})",
                f.join_bytes_by_kind
            );
            eprintln!(
                "(degree {}, links {:?}..{:?}, seed {}; the initial mesh agreed after {:.1} s \
                 virtual; {:.1} s wall)",
                cfg.degree,
                cfg.min_latency,
                cfg.max_latency,
                cfg.seed,
                f.build_convergence_s,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("scale: {e}");
            ExitCode::FAILURE
        }
    }
}
