//! Prometheus metrics with weave's names (reference §2.5), rendered from a
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
    let encryption = if snap.encryption { "yes" } else { "" };
    for c in &snap.mesh.connections {
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
