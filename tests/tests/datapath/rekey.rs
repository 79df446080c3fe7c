//! Sleeve key rotation: two hosts on the encrypted sleeve rotate their keys every second
//! (`--sleeve-rekey-interval 1`) while a TCP stream runs; the stream must cross at least
//! [`ROTATIONS`] rotations in each direction on both ends and arrive byte for byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use meshnet_tests::{Host, control_addr, lab_on_one_segment, launch, require_root, wait_for};

use super::pmtu::{metric, metrics};
use super::traffic::{Amount, assert_pings, join, start_receiver, start_sender};
use super::{Mode, OVERLAY_NET, PASSWORD, attached, wait_for_overlay, wait_for_progress};

/// Rotations each end must count, both for keys it sent and keys it received.
const ROTATIONS: u64 = 3;
/// Generous bound for the rotations to happen at one per second on a loaded machine.
const ROTATE_WITHIN: Duration = Duration::from_secs(60);

/// (keys sent, keys received) by `host`'s sleeve, from `/metrics`.
fn rekeys(host: &Host) -> (u64, u64) {
    let m = metrics(host);
    let get = |dir: &str| {
        let name = format!("meshnet_sleeve_rekeys_total{{direction=\"{dir}\"}}");
        metric(&m, &name).unwrap_or_else(|| panic!("{}: no {name} in /metrics:\n{m}", host.name()))
            as u64
    };
    (get("sent"), get("received"))
}

#[test]
fn encrypted_sleeve_tcp_stream_survives_key_rotations() {
    require_root();
    let mut lab = lab_on_one_segment("dprekey", &["h1", "h2"]);
    let args = ["--password", PASSWORD, "--sleeve-rekey-interval", "1"];
    launch(lab.host("h1"), &args);
    let h1_addr = control_addr(lab.host("h1"));
    let mut args2 = args.to_vec();
    args2.push(&h1_addr);
    launch(lab.host("h2"), &args2);
    for host in ["h1", "h2"] {
        wait_for_overlay(lab.host(host), 1, Mode::EncryptedSleeve);
    }
    let c1 = attached(&mut lab, "h1", "c1", Some(&format!("{OVERLAY_NET}.1/24")));
    let c2 = attached(&mut lab, "h2", "c2", Some(&format!("{OVERLAY_NET}.2/24")));
    assert_pings(&c1, &c2);

    // A paced stream (about 6 MB/s) that runs across the rotations.
    let seed = 0x5eed_4e4e;
    let progress = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = start_receiver(&c2, Arc::clone(&progress));
    let sender = start_sender(
        &c1,
        c2.ip,
        Amount::UntilStopped {
            stop: Arc::clone(&stop),
            pace: Duration::from_millis(10),
        },
        seed,
    );
    wait_for_progress(&progress, 1_000_000, "the stream to flow");
    let before: Vec<(u64, u64)> = ["h1", "h2"].map(|h| rekeys(lab.host(h))).to_vec();
    for (host, &(sent0, received0)) in ["h1", "h2"].into_iter().zip(&before) {
        wait_for(
            &format!("{host} to rotate sleeve keys {ROTATIONS} times each way"),
            ROTATE_WITHIN,
            || {
                let (sent, received) = rekeys(lab.host(host));
                (sent >= sent0 + ROTATIONS && received >= received0 + ROTATIONS)
                    .then_some(())
                    .ok_or((sent - sent0, received - received0))
            },
        );
    }
    wait_for_progress(
        &progress,
        1_000_000,
        "the stream to flow after the rotations",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = join(sender);
    let received = join(receiver);
    assert_eq!(
        sent, received,
        "the stream did not survive the key rotations intact (seed {seed})"
    );
    let after: Vec<(u64, u64)> = ["h1", "h2"].map(|h| rekeys(lab.host(h))).to_vec();
    eprintln!(
        "stream of {} bytes survived rotations: before {before:?}, after {after:?}",
        sent.bytes
    );
}
