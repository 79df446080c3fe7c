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
        let overlay = match c.state {
            ConnState::Established | ConnState::Pending => {
                if snap.encryption {
                    "sleeve"
                } else {
                    "fastdp"
                }
            }
            _ => "unknown",
        };
        let labels = vec![
            ("state".to_string(), c.state.to_string()),
            ("type".to_string(), overlay.to_string()),
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
    let peers = Gauge::<i64>::default();
    peers.set(i64::try_from(snap.mesh.peers.len()).unwrap_or(i64::MAX));
    registry.register(
        "meshnet_peers",
        "Number of known peers, including this one.",
        peers,
    );
    let mut out = String::new();
    // Encoding into a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}
