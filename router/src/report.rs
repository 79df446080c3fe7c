//! The report (`meshnet report`, `GET /report`) as a typed model with
//! weave's field names, and Go text/template rendering of
//! it (`report -f '{{.Router.Name}}'`, `GET /report?format=...`).
//!
//! The JSON and the templates are the same model: [`build`] makes a
//! [`Report`] from a [`Snapshot`], serde turns it into JSON, and [`render`]
//! executes a template over that JSON (with gtmpl, plus weave's extra
//! `json` function). A service that is off is absent, as in weave: a
//! template naming it fails. To report a new service, add an `Option` field
//! here and fill it in [`build`].

use std::collections::HashMap;

use meshnet_mesh::{BroadcastRouteStatus, ConnState, LocalConnStatus, PeerStatus, RouteStatus};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::driver::Snapshot;
use crate::status::{link_mtu, name_nick, overlay_of};

/// Services besides the router and IPAM that run in this process (the
/// caller that starts them says so in [`crate::RouterConfig::services`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    /// The Docker API proxy's addresses (`unix:///run/meshnet/meshnet.sock`).
    pub proxy: Option<Vec<String>>,
    /// The Docker network plugin's driver name.
    pub plugin: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Report {
    /// The router answers (always true once it does).
    pub ready: bool,
    /// meshnet's version.
    pub version: String,
    /// meshnet never checks for new versions; always disabled.
    pub version_check: VersionCheck,
    pub router: RouterReport,
    #[serde(rename = "IPAM", skip_serializing_if = "Option::is_none")]
    pub ipam: Option<meshnet_ipam::Status>,
    #[serde(rename = "DNS", skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginReport>,
}

/// weave's `VersionCheck`, as weave shows it with `CHECKPOINT_DISABLE` set.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct VersionCheck {
    pub enabled: bool,
    pub success: bool,
    pub new_version: String,
    /// Go's zero time, as weave marshals an unset one.
    pub next_check_at: String,
}

impl VersionCheck {
    /// The only state meshnet has: no check.
    pub fn disabled() -> VersionCheck {
        VersionCheck {
            enabled: false,
            success: false,
            new_version: String::new(),
            next_check_at: "0001-01-01T00:00:00Z".into(),
        }
    }

    /// The text after the version on `status`'s first line (weave's words).
    pub fn summary(&self) -> &'static str {
        "version check update disabled"
    }
}

/// The `Router` object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RouterReport {
    pub protocol: &'static str,
    pub protocol_min_version: u8,
    pub protocol_max_version: u8,
    pub encryption: bool,
    pub peer_discovery: bool,
    pub name: String,
    pub nick_name: String,
    #[serde(rename = "UID")]
    pub uid: u64,
    /// `SHA256:...` of our static key (meshnet's addition).
    pub key_fingerprint: String,
    /// Our static public key, base64.
    pub public_key: String,
    /// How many keys `--authorized-keys` lists (null when it is not set).
    pub authorized_keys: Option<usize>,
    pub port: u16,
    pub conn_limit: usize,
    pub peers: Vec<PeerStatus>,
    pub unicast_routes: Vec<RouteStatus>,
    pub broadcast_routes: Vec<BroadcastRouteStatus>,
    pub connections: Vec<ConnectionReport>,
    pub termination_count: u64,
    pub targets: Vec<String>,
    pub trusted_subnets: Vec<String>,
    /// Underlay addresses let in on the fast datapath (meshnet's addition).
    pub fastdp_admitted: Vec<String>,
}

/// One entry of `Router.Connections`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConnectionReport {
    pub address: String,
    pub outbound: bool,
    pub state: String,
    /// A target's last error.
    pub info: String,
    /// The overlay's attributes: name, mtu, encrypted, the sleeve's counters.
    pub attrs: Map<String, Value>,
    /// `name(nickname)` of a live connection's peer (meshnet's addition).
    pub peer: Option<String>,
}

/// The `DNS` object (weave's nameserver status).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsReport {
    pub domain: String,
    pub upstream: Vec<String>,
    /// Where the server listens (empty when it could not).
    pub address: String,
    #[serde(rename = "TTL")]
    pub ttl: u32,
    pub entries: Vec<DnsEntryReport>,
}

/// One entry of `DNS.Entries`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DnsEntryReport {
    pub hostname: String,
    pub origin: String,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub address: String,
    pub version: u64,
    /// 1 for a deleted name, as weave's.
    pub tombstone: u8,
}

/// The `Proxy` object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyReport {
    pub addresses: Vec<String>,
}

/// The `Plugin` object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PluginReport {
    pub driver_name: String,
}

/// The report of `snap`.
pub fn build(snap: &Snapshot) -> Report {
    let m = &snap.mesh;
    Report {
        ready: true,
        version: env!("CARGO_PKG_VERSION").into(),
        version_check: VersionCheck::disabled(),
        router: RouterReport {
            protocol: "meshnet",
            protocol_min_version: meshnet_mesh::PROTOCOL_MIN,
            protocol_max_version: meshnet_mesh::PROTOCOL_MAX,
            encryption: snap.encryption,
            peer_discovery: m.discovery,
            name: m.name.to_string(),
            nick_name: m.nickname.clone(),
            uid: m.uid.0,
            key_fingerprint: snap.public_key.fingerprint(),
            public_key: snap.public_key.to_base64(),
            authorized_keys: snap.authorized_keys,
            port: m.port,
            conn_limit: m.conn_limit,
            peers: m.peers.clone(),
            unicast_routes: m.unicast_routes.clone(),
            broadcast_routes: m.broadcast_routes.clone(),
            connections: m.connections.iter().map(|c| connection(snap, c)).collect(),
            termination_count: m.termination_count,
            targets: m.targets.clone(),
            trusted_subnets: snap.trusted_subnets.clone(),
            fastdp_admitted: snap
                .fastdp_admitted
                .iter()
                .map(ToString::to_string)
                .collect(),
        },
        ipam: snap.ipam.as_ref().map(|i| i.status.clone()),
        dns: snap.dns.as_ref().map(dns),
        proxy: snap.services.proxy.as_ref().map(|a| ProxyReport {
            addresses: a.clone(),
        }),
        plugin: snap.services.plugin.as_ref().map(|d| PluginReport {
            driver_name: d.clone(),
        }),
    }
}

fn dns(d: &crate::dns::DnsSnapshot) -> DnsReport {
    DnsReport {
        domain: d.domain.clone(),
        upstream: d.upstream.iter().map(|a| a.ip().to_string()).collect(),
        address: d
            .address
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        ttl: d.ttl,
        entries: d
            .entries
            .iter()
            .map(|e| DnsEntryReport {
                hostname: e.name.clone(),
                origin: e.origin.to_string(),
                container_id: e.container.clone(),
                address: e.addr.to_string(),
                version: e.version,
                tombstone: u8::from(e.tombstone),
            })
            .collect(),
    }
}

fn connection(snap: &Snapshot, c: &LocalConnStatus) -> ConnectionReport {
    let mut attrs = Map::new();
    if matches!(c.state, ConnState::Established | ConnState::Pending) {
        let peer = c.peer.as_ref().map(|p| p.0);
        let (overlay, reason) = overlay_of(snap, peer);
        if let Some(mtu) = peer.and_then(|p| link_mtu(snap, p, &overlay)) {
            attrs.insert("mtu".into(), json!(mtu));
        }
        if let Some(s) = peer.and_then(|p| snap.sleeve.get(&p)) {
            attrs.insert("sleeve_healthy".into(), json!(s.healthy));
            attrs.insert("sleeve_tx".into(), json!(s.tx_packets));
            attrs.insert("sleeve_rx".into(), json!(s.rx_packets));
            attrs.insert("sleeve_drops".into(), json!(s.drops));
        }
        attrs.insert("name".into(), json!(overlay));
        if let Some(reason) = reason {
            attrs.insert("reason".into(), json!(reason));
        }
        if snap.conn_encrypted(c) {
            attrs.insert("encrypted".into(), json!(true));
        }
    }
    let info = match (&c.error, c.state) {
        (Some(e), ConnState::Failed | ConnState::Retrying) => e.clone(),
        _ => String::new(),
    };
    ConnectionReport {
        address: c.address.clone(),
        outbound: c.outbound,
        state: c.state.to_string(),
        info,
        attrs,
        peer: c.peer.as_ref().map(|(n, nick)| name_nick(*n, nick)),
    }
}

/// The report as pretty JSON (what `meshnet report` prints).
pub fn to_json(report: &Report) -> String {
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}

/// Why a template could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot parse the template: {0}")]
    Parse(String),
    #[error("cannot execute the template: {0}")]
    Exec(String),
}

/// The template's name in error positions (`template: format:2: ...`).
pub const TEMPLATE_NAME: &str = "format";

/// The longest template accepted (a report template is a line or two; this
/// bounds the work of locating a parse error).
pub const MAX_TEMPLATE_LEN: usize = 16 * 1024;

fn parse(template: &str) -> Result<gtmpl::Template, String> {
    let mut t = gtmpl::Template::with_name(TEMPLATE_NAME);
    t.add_func("json", json_func);
    t.parse(template)
        .map_err(|e| without_position(&e.to_string()))?;
    Ok(t)
}

/// gtmpl's message without its `template: format:N:` prefix, whose line
/// number is unreliable (its lexer runs ahead of the parser).
fn without_position(msg: &str) -> String {
    let prefix = format!("template: {TEMPLATE_NAME}:");
    match msg.strip_prefix(&prefix) {
        Some(rest) => rest
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start_matches(':')
            .trim()
            .to_string(),
        None => msg.to_string(),
    }
}

/// The line of a parse error: the first line whose end makes a prefix of
/// the template fail with the same message.
fn error_line(template: &str, message: &str) -> Option<usize> {
    let mut end = 0;
    for (i, line) in template.split_inclusive('\n').enumerate() {
        end += line.len();
        if parse(&template[..end]).err().as_deref() == Some(message) {
            return Some(i + 1);
        }
    }
    None
}

/// Executes the Go template `template` over `report`.
pub fn render(report: &Report, template: &str) -> Result<String, TemplateError> {
    if template.len() > MAX_TEMPLATE_LEN {
        return Err(TemplateError::Parse(format!(
            "the template has {} bytes; at most {MAX_TEMPLATE_LEN} are accepted",
            template.len()
        )));
    }
    let t = parse(template).map_err(|msg| {
        let at = match error_line(template, &msg) {
            Some(line) => format!("line {line}: "),
            None => String::new(),
        };
        TemplateError::Parse(format!(
            "{at}{msg}; templates are Go text/template, e.g. '{{{{.Router.Name}}}}'"
        ))
    })?;
    let data = serde_json::to_value(report).map_err(|e| TemplateError::Exec(e.to_string()))?;
    t.render(&gtmpl::Context::from(to_gtmpl(data)))
        .map_err(|e| TemplateError::Exec(exec_message(e)))
}

/// An execution error in a few words: gtmpl's own message for a missing
/// field carries the whole object it looked in.
fn exec_message(e: gtmpl::error::ExecError) -> String {
    match e {
        gtmpl::error::ExecError::NoFiledFor(field, gtmpl::Value::Object(o)) => {
            let mut fields: Vec<&String> = o.keys().collect();
            fields.sort();
            let fields: Vec<&str> = fields.iter().map(|f| f.as_str()).collect();
            format!(
                "no field {field} here; there are: {} (a service that is off has no field)",
                fields.join(", ")
            )
        }
        gtmpl::error::ExecError::NoFiledFor(field, _) => {
            format!("no field {field}: only objects have fields")
        }
        other => other.to_string(),
    }
}

/// weave's template function `json`: the value as compact JSON.
fn json_func(args: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    match args {
        [v] => Ok(gtmpl::Value::String(from_gtmpl(v).to_string())),
        _ => Err(gtmpl::FuncError::ExactlyXArgs("json".into(), 1)),
    }
}

/// JSON into template data: objects are Go structs (a missing field is an
/// error, as in weave).
fn to_gtmpl(v: Value) -> gtmpl::Value {
    match v {
        Value::Null => gtmpl::Value::Nil,
        Value::Bool(b) => gtmpl::Value::Bool(b),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => gtmpl::Value::from(u),
            (None, Some(i), _) => gtmpl::Value::from(i),
            (None, None, Some(f)) => gtmpl::Value::from(f),
            (None, None, None) => gtmpl::Value::Nil,
        },
        Value::String(s) => gtmpl::Value::String(s),
        Value::Array(a) => gtmpl::Value::Array(a.into_iter().map(to_gtmpl).collect()),
        Value::Object(o) => gtmpl::Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, to_gtmpl(v)))
                .collect::<HashMap<_, _>>(),
        ),
    }
}

/// Template data back into JSON, for `json` (object keys come out sorted).
fn from_gtmpl(v: &gtmpl::Value) -> Value {
    match v {
        gtmpl::Value::NoValue | gtmpl::Value::Nil | gtmpl::Value::Function(_) => Value::Null,
        gtmpl::Value::Bool(b) => Value::Bool(*b),
        gtmpl::Value::String(s) => Value::String(s.clone()),
        gtmpl::Value::Number(n) => n
            .as_u64()
            .map(Value::from)
            .or_else(|| n.as_i64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Null),
        gtmpl::Value::Array(a) => Value::Array(a.iter().map(from_gtmpl).collect()),
        gtmpl::Value::Object(o) | gtmpl::Value::Map(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), from_gtmpl(v))).collect())
        }
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
pub(crate) mod tests;
