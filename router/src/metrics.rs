//! Prometheus metrics with weave's names, rendered from a
//! [`Snapshot`] at scrape time, so they can never disagree with `status`.

use meshnet_mesh::ConnState;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::driver::Snapshot;

type Labels = Vec<(String, String)>;

/// Renders the OpenMetrics text for one snapshot.
pub fn render(snap: &Snapshot) -> String {
    let mut registry = Registry::default();
    let connections = Family::<Labels, Gauge>::default();
    registry.register(
        "weave_connections",
        "Number of peer connections, by state, overlay type and encryption.",
        connections.clone(),
    );
    for c in &snap.mesh.connections {
        let encryption = if snap.conn_encrypted(c) { "yes" } else { "" };
        let overlay = match (c.state, c.peer.as_ref().and_then(|p| snap.paths.get(&p.0))) {
            (ConnState::Established | ConnState::Pending, Some((path, _))) => path.to_string(),
            _ => "unknown".to_string(),
        };
        let labels = vec![
            ("state".to_string(), c.state.to_string()),
            ("type".to_string(), overlay),
            ("encryption".to_string(), encryption.to_string()),
        ];
        connections.get_or_create(&labels).inc();
    }
    let terminations = Counter::<u64>::default();
    terminations.inc_by(snap.mesh.termination_count);
    registry.register(
        "weave_connection_terminations",
        "Number of peer connections terminated.",
        terminations,
    );
    let fallbacks = Family::<Labels, Counter>::default();
    registry.register(
        "meshnet_fastdp_fallbacks",
        "Times a peer fell back from the fast datapath to the sleeve, by reason \
         (heartbeat_timeout: the VXLAN path died; path_mtu: it stopped carrying full-size frames).",
        fallbacks.clone(),
    );
    let f = snap.fastdp_fallbacks;
    for (reason, n) in [
        ("heartbeat_timeout", f.heartbeat_timeout),
        ("path_mtu", f.path_mtu),
    ] {
        fallbacks
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc_by(n);
    }
    let rekeys = Family::<Labels, Counter>::default();
    registry.register(
        "meshnet_sleeve_rekeys",
        "Sleeve key rotations (sent: a fresh receive key we sent a peer; received: a peer's \
         fresh key that replaced the one we sealed with).",
        rekeys.clone(),
    );
    for (direction, n) in [
        ("sent", snap.sleeve_rekeys.0),
        ("received", snap.sleeve_rekeys.1),
    ] {
        rekeys
            .get_or_create(&vec![("direction".to_string(), direction.to_string())])
            .inc_by(n);
    }
    let limits = Family::<Labels, Counter>::default();
    registry.register(
        "meshnet_limit_disconnects",
        "Connections dropped because the peer passed a limit, by the limit (queued bytes: it \
         stopped reading our gossip; the others: it sent more than a message may carry).",
        limits.clone(),
    );
    for (reason, n) in &snap.limit_disconnects {
        limits
            .get_or_create(&vec![("reason".to_string(), reason.clone())])
            .inc_by(*n);
    }
    let drops = Family::<Labels, Counter>::default();
    registry.register(
        "meshnet_limit_drops",
        "Input not stored or relayed because a table was at its limit, by table (unknown-channel \
         gossip: MAX_SURROGATE_SEEN; sleeve MACs: MAX_MACS_PER_PEER / MAX_MAC_ENTRIES).",
        drops.clone(),
    );
    for (table, n) in &snap.limit_drops {
        drops
            .get_or_create(&vec![("table".to_string(), table.clone())])
            .inc_by(*n);
    }
    let peers = Gauge::<i64>::default();
    peers.set(i64::try_from(snap.mesh.peers.len()).unwrap_or(i64::MAX));
    registry.register(
        "meshnet_peers",
        "Number of known peers, including this one.",
        peers,
    );
    if let Some(dns) = &snap.dns {
        dns_metrics(&mut registry, dns);
    }
    if let Some(ipam) = &snap.ipam {
        let m = &ipam.metrics;
        let ips = Family::<Labels, Gauge>::default();
        registry.register("weave_ips", "Number of IP addresses.", ips.clone());
        ips.get_or_create(&vec![("state".to_string(), "local-used".to_string())])
            .set(clamp(m.local_used));
        let gauge = |registry: &mut Registry, name: &str, help: &str, v: u64| {
            let g = Gauge::<i64>::default();
            g.set(clamp(v));
            registry.register(name, help, g);
        };
        gauge(
            &mut registry,
            "weave_max_ips",
            "Size of the IP allocation range.",
            m.max_ips,
        );
        gauge(
            &mut registry,
            "weave_ipam_unreachable_count",
            "Peers owning IP space that are not reachable.",
            m.unreachable_count,
        );
        let pct = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        pct.set(m.unreachable_percentage);
        registry.register(
            "weave_ipam_unreachable_percentage",
            "Share of the range owned by unreachable peers.",
            pct,
        );
        gauge(
            &mut registry,
            "weave_ipam_pending_allocates",
            "Allocations waiting for space.",
            m.pending_allocates,
        );
        gauge(
            &mut registry,
            "weave_ipam_pending_claims",
            "Claims waiting for their owner.",
            m.pending_claims,
        );
        gauge(
            &mut registry,
            "meshnet_ipam_conflicts",
            "Addresses live here and on another peer.",
            m.conflicts,
        );
    }
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn dns_metrics(registry: &mut Registry, dns: &crate::dns::DnsSnapshot) {
    let own = dns
        .entries
        .iter()
        .filter(|e| !e.tombstone && e.origin == dns.me)
        .count();
    let entries = Gauge::<i64>::default();
    entries.set(i64::try_from(own).unwrap_or(i64::MAX));
    registry.register(
        "weave_dns_entries",
        "Live DNS entries originated by this peer.",
        entries,
    );
    let counter = |registry: &mut Registry, name: &str, help: &str, v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        registry.register(name, help, c);
    };
    counter(
        registry,
        "meshnet_dns_queries",
        "DNS queries received.",
        dns.queries,
    );
    counter(
        registry,
        "meshnet_dns_forwarded",
        "DNS queries forwarded to upstream servers.",
        dns.forwarded,
    );
    counter(
        registry,
        "meshnet_dns_upstream_failures",
        "Upstream DNS servers that failed or timed out on a forwarded query.",
        dns.upstream_failures,
    );
    let answers = Family::<Labels, Counter<u64>>::default();
    registry.register(
        "meshnet_dns_answers",
        "DNS replies sent, by response code.",
        answers.clone(),
    );
    for (code, n) in &dns.rcodes {
        answers
            .get_or_create(&vec![("rcode".to_string(), (*code).to_string())])
            .inc_by(*n);
    }
}

#[cfg(test)]
mod tests {
    use meshnet_mesh::overlay::{Fallbacks, NoFastdp, Path};
    use meshnet_mesh::{ConnState, LocalConnStatus};

    use super::render;
    use crate::report::tests::snapshot;

    /// The sample lines (no `#` comments) of a rendering, sorted.
    fn samples(text: &str) -> Vec<String> {
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    fn conn(state: ConnState, peer: Option<&str>) -> LocalConnStatus {
        LocalConnStatus {
            address: "192.0.2.9:6783".into(),
            outbound: true,
            state,
            peer: peer.map(|p| (p.parse().unwrap(), String::new())),
            error: None,
            retry_in: None,
            conn: None,
        }
    }

    #[test]
    fn every_metric_with_weaves_names_and_the_snapshots_values() {
        let mut snap = snapshot();
        let (b, c) = ("8a:bb:bb:bb:bb:bb", "8a:cc:cc:cc:cc:cc");
        snap.mesh.connections = vec![
            conn(ConnState::Established, Some(b)),
            conn(ConnState::Established, Some(c)),
            conn(ConnState::Pending, Some(c)),
            conn(ConnState::Failed, None),
            // A live peer with no datapath yet.
            conn(ConnState::Established, Some("8a:dd:dd:dd:dd:dd")),
        ];
        snap.paths = [
            (
                b.parse().unwrap(),
                (Path::Sleeve, Some(NoFastdp::Encrypted)),
            ),
            (c.parse().unwrap(), (Path::Fastdp, None)),
        ]
        .into();
        snap.mesh.termination_count = 4;
        snap.fastdp_fallbacks = Fallbacks {
            heartbeat_timeout: 2,
            path_mtu: 3,
        };
        snap.sleeve_rekeys = (5, 6);
        snap.limit_disconnects = [
            (crate::driver::SEND_QUEUE_LIMIT.to_string(), 2),
            ("known peers".to_string(), 1),
        ]
        .into();
        snap.limit_drops = [("sleeve MACs".to_string(), 7)].into();
        {
            let dns = snap.dns.as_mut().unwrap();
            dns.queries = 10;
            dns.forwarded = 7;
            dns.upstream_failures = 1;
            dns.rcodes = vec![("NOERROR", 8), ("NXDOMAIN", 2)];
            let mut theirs = dns.entries[0].clone();
            theirs.origin = b.parse().unwrap();
            let mut dead = dns.entries[0].clone();
            dead.tombstone = true;
            dns.entries.extend([theirs, dead]);
        }
        let text = render(&snap);
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
        let want = [
            "meshnet_dns_answers_total{rcode=\"NOERROR\"} 8",
            "meshnet_dns_answers_total{rcode=\"NXDOMAIN\"} 2",
            "meshnet_dns_forwarded_total 7",
            "meshnet_dns_queries_total 10",
            "meshnet_dns_upstream_failures_total 1",
            "meshnet_fastdp_fallbacks_total{reason=\"heartbeat_timeout\"} 2",
            "meshnet_fastdp_fallbacks_total{reason=\"path_mtu\"} 3",
            "meshnet_ipam_conflicts 0",
            "meshnet_limit_disconnects_total{reason=\"known peers\"} 1",
            "meshnet_limit_disconnects_total{reason=\"queued bytes\"} 2",
            "meshnet_limit_drops_total{table=\"sleeve MACs\"} 7",
            "meshnet_peers 1",
            "meshnet_sleeve_rekeys_total{direction=\"received\"} 6",
            "meshnet_sleeve_rekeys_total{direction=\"sent\"} 5",
            "weave_connection_terminations_total 4",
            "weave_connections{state=\"established\",type=\"fastdp\",encryption=\"yes\"} 1",
            "weave_connections{state=\"established\",type=\"sleeve\",encryption=\"yes\"} 1",
            "weave_connections{state=\"established\",type=\"unknown\",encryption=\"yes\"} 1",
            "weave_connections{state=\"failed\",type=\"unknown\",encryption=\"yes\"} 1",
            "weave_connections{state=\"pending\",type=\"fastdp\",encryption=\"yes\"} 1",
            "weave_dns_entries 1",
            "weave_ipam_pending_allocates 0",
            "weave_ipam_pending_claims 0",
            "weave_ipam_unreachable_count 0",
            "weave_ipam_unreachable_percentage 0.0",
            "weave_ips{state=\"local-used\"} 1",
            "weave_max_ips 65536",
        ];
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(samples(&text), want, "{text}");
        for help in [
            "# HELP weave_connections Number of peer connections, by state, overlay type and encryption.",
            "# TYPE weave_connections gauge",
            "# TYPE weave_connection_terminations counter",
            "# TYPE weave_max_ips gauge",
        ] {
            assert!(text.contains(help), "{help:?} missing: {text}");
        }
    }

    #[test]
    fn unencrypted_and_without_ipam_or_dns() {
        let mut snap = snapshot();
        snap.encryption = false;
        snap.ipam = None;
        snap.dns = None;
        let text = render(&snap);
        let s = samples(&text);
        let state = snap.mesh.connections[0].state;
        let line =
            format!("weave_connections{{state=\"{state}\",type=\"unknown\",encryption=\"\"}} 1");
        assert!(s.contains(&line), "{line} missing: {text}");
        for absent in [
            "weave_ips",
            "weave_max_ips",
            "weave_dns_entries",
            "meshnet_dns_queries",
        ] {
            assert!(
                !s.iter().any(|l| l.starts_with(absent)),
                "{absent} without its service: {text}"
            );
        }
        assert!(s.contains(&"meshnet_peers 1".to_string()), "{text}");
    }
}
