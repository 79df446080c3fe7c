//! The HTTP API (weave's paths), on three listeners:
//!
//! - the control socket `$MESHNET_RUN_DIR/meshnet-api.sock` (root-only,
//!   see [`crate::api_client::API_SOCKET`]): every route, including all that
//!   change state (connect, forget, IPAM allocation/claim/release, prime,
//!   rmpeer, the Docker watcher's container deaths and starts, ...);
//! - `MESHNET_HTTP_ADDR` (TCP, default 127.0.0.1:6784): weave's read-only
//!   routes (status, report, metrics, and the IPAM lookups weave tools
//!   read). Any other method or a state-changing route gets 403 with a
//!   pointer to the socket, and so does a request whose `Host` is not a
//!   loopback name or address (DNS rebinding: a web page whose name now
//!   resolves to 127.0.0.1);
//! - the status address (default 127.0.0.1:6782): status and metrics
//!   only, with the same `Host` check.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use tokio::sync::{mpsc, oneshot};

use crate::dns::DnsRequest;
use crate::driver::{ApiRequest, Snapshot};
use crate::ipam::{ContainerEvent, IpamRequest};
use crate::{metrics, report, status};

/// Shared state of the handlers: the way to the driver.
#[derive(Clone, Debug)]
pub struct Api {
    pub driver: mpsc::Sender<ApiRequest>,
}

impl Api {
    async fn snapshot(&self) -> Result<Snapshot, Response> {
        let (tx, rx) = oneshot::channel();
        let gone =
            || (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response();
        self.driver
            .send(ApiRequest::Snapshot(tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

/// What the TCP listeners let through.
#[derive(Clone, Debug)]
pub struct Guard {
    /// The address the listener is bound to: a `Host` naming it is fine
    /// too (a router told to listen on a LAN address is asked by that
    /// address).
    pub local: IpAddr,
    /// The control socket, named in refusals.
    pub socket: Arc<str>,
}

/// Whether `host` (a `Host` header value) names this machine: `localhost`,
/// a loopback address, or the listener's own address, with or without a
/// port. A name that only resolves here (DNS rebinding) is not.
pub fn host_allowed(host: &str, local: IpAddr) -> bool {
    let host = host.trim();
    let bare = match host.strip_prefix('[') {
        // [v6] or [v6]:port
        Some(rest) => match rest.split_once(']') {
            Some((addr, tail)) if tail.is_empty() || is_port(tail) => addr,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && is_port(port) => h,
            Some(_) if host.matches(':').count() > 1 => host,
            Some(_) => return false,
            None => host,
        },
    };
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match bare.parse::<IpAddr>() {
        Ok(ip) => {
            ip.is_loopback() || ip == local || (local.is_unspecified() && !ip.is_unspecified())
        }
        Err(_) => false,
    }
}

fn is_port(tail: &str) -> bool {
    tail.strip_prefix(':')
        .unwrap_or(tail)
        .parse::<u16>()
        .is_ok()
}

fn forbidden(msg: String) -> Response {
    (StatusCode::FORBIDDEN, msg + "\n").into_response()
}

/// The `Host` check and the read-only rule of the TCP listeners.
async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).map(HeaderValue::to_str);
    match host {
        Some(Ok(h)) if host_allowed(h, g.local) => {}
        Some(Ok(h)) => {
            return forbidden(format!(
                "refused: Host {h:?} is not a loopback name or address (a web page may be trying DNS rebinding); call the API as http://127.0.0.1:PORT/ or http://localhost:PORT/"
            ));
        }
        _ => {
            return forbidden(
                "refused: a request without a readable Host header; send Host: 127.0.0.1".into(),
            );
        }
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return read_only_refusal(&g);
    }
    next.run(req).await
}

fn read_only_refusal(g: &Guard) -> Response {
    forbidden(format!(
        "refused: this address serves read-only calls; changes go through the root-only socket {} (run the meshnet command as root)",
        g.socket
    ))
}

/// Routes that only read: status and metrics (the status address).
pub fn read_only(api: Api) -> Router {
    Router::new()
        .route("/status", get(status_summary))
        .route("/status/{sub}", get(status_sub))
        .route("/report", get(report))
        .route("/identity", get(identity))
        .route("/metrics", get(metrics_text))
        .route("/domain", get(dns_domain))
        .route("/dns-address", get(dns_address))
        .route("/dns-address-port", get(dns_address_port))
        .with_state(api)
}

/// The TCP control address: [`read_only`] plus weave's IPAM lookups, behind
/// [`guard`]. Routes that change state answer 403 naming the socket.
pub fn tcp(api: Api, g: Guard) -> Router {
    let refuse = {
        let g = g.clone();
        move || {
            let g = g.clone();
            async move { read_only_refusal(&g) }
        }
    };
    read_only(api.clone())
        .merge(
            Router::new()
                .route("/ip/{id}", get(ip_lookup))
                .route("/ip/{id}/{ip}/{len}", get(ip_lookup_in))
                .route("/ipinfo/defaultsubnet", get(default_subnet))
                .route("/name", get(dns_entries))
                // Waits for, and may trigger, the ring's consensus.
                .route("/ring", any(refuse))
                .with_state(api),
        )
        .layer(axum::middleware::from_fn_with_state(g, guard))
}

/// The status address: [`read_only`] behind [`guard`].
pub fn status(api: Api, g: Guard) -> Router {
    read_only(api).layer(axum::middleware::from_fn_with_state(g, guard))
}

/// The full control API (the root-only socket).
pub fn control(api: Api) -> Router {
    read_only(api.clone()).merge(
        Router::new()
            .route("/connect", post(connect))
            .route("/forget", post(forget))
            .route("/reload", post(reload))
            .route(
                "/ip/{id}",
                post(ip_allocate).get(ip_lookup).delete(ip_free_all),
            )
            .route(
                "/ip/{id}/{ip}/{len}",
                post(ip_allocate_in).put(ip_claim).get(ip_lookup_in),
            )
            .route("/ip/{id}/{ip}", delete(ip_free))
            .route("/ring", get(ring))
            .route("/peer", delete(peer_leave))
            .route("/peer/{name}", delete(peer_remove))
            .route("/ipinfo/defaultsubnet", get(default_subnet))
            .route("/ipinfo/owner/{ip}", get(ip_owner))
            .route("/ipinfo/held", get(ip_held))
            .route(
                "/containers/running",
                axum::routing::put(containers_running),
            )
            .route("/containers/{id}/{event}", post(container_event))
            .route("/name", get(dns_entries).delete(dns_remove_all))
            .route("/name/{container}", delete(dns_remove_container))
            .route(
                "/name/{container}/{ip}",
                axum::routing::put(dns_add).delete(dns_remove_ip),
            )
            .with_state(api),
    )
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn status_summary(State(api): State<Api>) -> Response {
    match api.snapshot().await {
        Ok(s) => text(status::summary(&s)),
        Err(r) => r,
    }
}

async fn identity(State(api): State<Api>) -> Response {
    match api.snapshot().await {
        Ok(s) => text(status::identity_line(&s)),
        Err(r) => r,
    }
}

async fn status_sub(
    State(api): State<Api>,
    Path(sub): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let snap = match api.snapshot().await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let verbose = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "verbose" && v == "true");
    match sub.as_str() {
        "peers" => text(status::peers(&snap, verbose)),
        "connections" => text(status::connections(&snap)),
        "targets" => text(status::targets(&snap)),
        "ipam" => text(status::ipam(&snap)),
        "dns" => text(status::dns(&snap)),
        other => (
            StatusCode::NOT_FOUND,
            format!(
                "Invalid 'meshnet status' sub-command: {other}; use one of: peers, connections, targets, ipam, dns\n"
            ),
        )
            .into_response(),
    }
}

/// `GET /report`: JSON, or `?format=TEMPLATE` executed over the same model.
async fn report(State(api): State<Api>, RawQuery(query): RawQuery) -> Response {
    let format = form(query, &[])
        .into_iter()
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v);
    let snap = match api.snapshot().await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let model = report::build(&snap);
    match format {
        None => (
            [(header::CONTENT_TYPE, "application/json")],
            report::to_json(&model),
        )
            .into_response(),
        Some(t) => match report::render(&model, &t) {
            Ok(body) => text(body),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
    }
}

async fn metrics_text(State(api): State<Api>) -> Response {
    match api.snapshot().await {
        Ok(s) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics::render(&s),
        )
            .into_response(),
        Err(r) => r,
    }
}

/// Form values from the query string and an urlencoded body (weave reads
/// both through `r.FormValue`).
fn form(query: Option<String>, body: &[u8]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    if let Some(q) = query {
        pairs.extend(form_urlencoded::parse(q.as_bytes()).into_owned());
    }
    pairs
}

fn peers_of(pairs: &[(String, String)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == "peer")
        .map(|(_, v)| v.clone())
        .collect()
}

async fn connect(State(api): State<Api>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let pairs = form(q, &body);
    let replace = pairs.iter().any(|(k, v)| k == "replace" && v == "true");
    let (tx, rx) = oneshot::channel();
    let req = ApiRequest::Connect {
        peers: peers_of(&pairs),
        replace,
        reply: tx,
    };
    if api.driver.send(req).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response();
    }
    match rx.await {
        Ok(Ok(())) => StatusCode::OK.into_response(),
        Ok(Err(errors)) => (StatusCode::BAD_REQUEST, errors.join("\n") + "\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response(),
    }
}

async fn forget(State(api): State<Api>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let pairs = form(q, &body);
    let (tx, rx) = oneshot::channel();
    let req = ApiRequest::Forget {
        peers: peers_of(&pairs),
        reply: tx,
    };
    if api.driver.send(req).await.is_err() || rx.await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response();
    }
    StatusCode::OK.into_response()
}

async fn reload(State(api): State<Api>) -> Response {
    let (tx, rx) = oneshot::channel();
    let gone = || (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response();
    if api.driver.send(ApiRequest::Reload(Some(tx))).await.is_err() {
        return gone();
    }
    match rx.await {
        Ok(Ok(msg)) => text(format!("{msg}\n")),
        Ok(Err(e)) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        Err(_) => gone(),
    }
}

async fn ask_ipam(api: &Api, make: impl FnOnce(crate::ipam::Reply) -> IpamRequest) -> Response {
    ask_driver(api, |reply| ApiRequest::Ipam(make(reply))).await
}

/// Sends the driver the request `make` builds around a reply channel and answers with the
/// status and body the driver replies.
async fn ask_driver(api: &Api, make: impl FnOnce(crate::ipam::Reply) -> ApiRequest) -> Response {
    let (tx, rx) = oneshot::channel();
    if api.driver.send(make(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response();
    }
    match rx.await {
        Ok((code, body)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response(),
    }
}

/// Parses the `{ip}/{len}` path segments, or answers 400.
fn cidr(ip: &str, len: &str) -> Result<meshnet_ipam::Cidr, Box<Response>> {
    let parsed = ip
        .parse::<std::net::Ipv4Addr>()
        .ok()
        .zip(len.parse::<u8>().ok())
        .and_then(|(ip, len)| meshnet_ipam::Cidr::new(ip, len));
    parsed.ok_or_else(|| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("invalid CIDR {ip}/{len}: use an IPv4 address and a prefix length 0-32\n"),
            )
                .into_response(),
        )
    })
}

/// weave's `check-alive=true`: release the addresses when the container dies.
fn check_alive(pairs: &[(String, String)]) -> bool {
    pairs.iter().any(|(k, v)| k == "check-alive" && v == "true")
}

async fn ip_allocate(
    State(api): State<Api>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let check_alive = check_alive(&form(q, &body));
    ask_ipam(&api, |reply| IpamRequest::Allocate {
        ident: id,
        subnet: None,
        check_alive,
        reply,
    })
    .await
}

async fn ip_allocate_in(
    State(api): State<Api>,
    Path((id, ip, len)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let subnet = match cidr(&ip, &len) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let check_alive = check_alive(&form(q, &body));
    ask_ipam(&api, |reply| IpamRequest::Allocate {
        ident: id,
        subnet: Some(subnet),
        check_alive,
        reply,
    })
    .await
}

async fn ip_claim(
    State(api): State<Api>,
    Path((id, ip, len)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let addr = match cidr(&ip, &len) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let pairs = form(q, &body);
    let no_error_on_unknown = pairs
        .iter()
        .any(|(k, v)| k == "noErrorOnUnknown" && v == "true");
    ask_ipam(&api, |reply| IpamRequest::Claim {
        ident: id,
        addr,
        no_error_on_unknown,
        check_alive: check_alive(&pairs),
        reply,
    })
    .await
}

async fn ip_lookup(State(api): State<Api>, Path(id): Path<String>) -> Response {
    ask_ipam(&api, |reply| IpamRequest::Lookup {
        ident: id,
        subnet: None,
        reply,
    })
    .await
}

async fn ip_lookup_in(
    State(api): State<Api>,
    Path((id, ip, len)): Path<(String, String, String)>,
) -> Response {
    let subnet = match cidr(&ip, &len) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    ask_ipam(&api, |reply| IpamRequest::Lookup {
        ident: id,
        subnet: Some(subnet),
        reply,
    })
    .await
}

async fn ip_free_all(State(api): State<Api>, Path(id): Path<String>) -> Response {
    ask_ipam(&api, |reply| IpamRequest::Free {
        ident: id,
        addr: None,
        reply,
    })
    .await
}

async fn ip_free(State(api): State<Api>, Path((id, ip)): Path<(String, String)>) -> Response {
    let Ok(addr) = ip.parse() else {
        return (
            StatusCode::BAD_REQUEST,
            format!("invalid IP address {ip}\n"),
        )
            .into_response();
    };
    ask_ipam(&api, |reply| IpamRequest::Free {
        ident: id,
        addr: Some(addr),
        reply,
    })
    .await
}

async fn ring(State(api): State<Api>) -> Response {
    ask_ipam(&api, |reply| IpamRequest::Prime { reply }).await
}

async fn peer_leave(State(api): State<Api>) -> Response {
    ask_ipam(&api, |reply| IpamRequest::Leave { reply }).await
}

async fn peer_remove(State(api): State<Api>, Path(name): Path<String>) -> Response {
    ask_ipam(&api, |reply| IpamRequest::RmPeer { peer: name, reply }).await
}

async fn default_subnet(State(api): State<Api>) -> Response {
    ask_ipam(&api, |reply| IpamRequest::DefaultSubnet { reply }).await
}

async fn ip_owner(State(api): State<Api>, Path(ip): Path<String>) -> Response {
    let addr = match ipv4(&ip) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    ask_ipam(&api, |reply| IpamRequest::Owner { addr, reply }).await
}

async fn ip_held(State(api): State<Api>, RawQuery(q): RawQuery) -> Response {
    let prefix = form(q, &[])
        .into_iter()
        .find(|(k, _)| k == "prefix")
        .map(|(_, v)| v)
        .unwrap_or_default();
    ask_ipam(&api, |reply| IpamRequest::Held { prefix, reply }).await
}

async fn ask_container(api: &Api, event: ContainerEvent) -> Response {
    ask_driver(api, |reply| ApiRequest::Container { event, reply }).await
}

/// `POST /containers/{id}/died|started|destroyed` (the Docker watcher).
async fn container_event(
    State(api): State<Api>,
    Path((id, event)): Path<(String, String)>,
) -> Response {
    let event = match event.as_str() {
        "died" => ContainerEvent::Died(id),
        "started" => ContainerEvent::Started(id),
        "destroyed" => ContainerEvent::Destroyed(id),
        other => {
            return (
                StatusCode::NOT_FOUND,
                format!("unknown container event {other:?}: use died, started or destroyed\n"),
            )
                .into_response();
        }
    };
    ask_container(&api, event).await
}

/// `PUT /containers/running` with `id=...` for every running container.
async fn containers_running(
    State(api): State<Api>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let ids = form(q, &body)
        .into_iter()
        .filter(|(k, _)| k == "id")
        .map(|(_, v)| v)
        .collect();
    ask_container(&api, ContainerEvent::Running(ids)).await
}

fn dns_disabled() -> Response {
    (
        StatusCode::NOT_FOUND,
        "DNS is disabled: launch without --no-dns to use it\n",
    )
        .into_response()
}

/// The DNS snapshot, or 404 when DNS is off.
async fn dns_snapshot(api: &Api) -> Result<crate::dns::DnsSnapshot, Response> {
    api.snapshot().await?.dns.ok_or_else(dns_disabled)
}

async fn dns_domain(State(api): State<Api>) -> Response {
    match dns_snapshot(&api).await {
        Ok(d) => text(d.domain),
        Err(r) => r,
    }
}

async fn dns_address_port(State(api): State<Api>) -> Response {
    match dns_snapshot(&api).await {
        Ok(d) => match d.address {
            Ok(a) => text(a.to_string()),
            Err(why) => (StatusCode::NOT_FOUND, why + "\n").into_response(),
        },
        Err(r) => r,
    }
}

async fn dns_address(State(api): State<Api>) -> Response {
    match dns_snapshot(&api).await {
        Ok(d) => match d.address {
            Ok(a) => text(a.ip().to_string()),
            Err(why) => (StatusCode::NOT_FOUND, why + "\n").into_response(),
        },
        Err(r) => r,
    }
}

async fn dns_entries(State(api): State<Api>) -> Response {
    match dns_snapshot(&api).await {
        Ok(d) => {
            let body = serde_json::to_string(&status::dns_entries_json(&d)).unwrap_or_default();
            ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
        }
        Err(r) => r,
    }
}

async fn ask_dns(api: &Api, req: DnsRequest, rx: oneshot::Receiver<(u16, String)>) -> Response {
    if api.driver.send(ApiRequest::Dns(req)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response();
    }
    match rx.await {
        Ok((code, body)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "router is shutting down\n").into_response(),
    }
}

fn fqdn_of(pairs: &[(String, String)]) -> Option<String> {
    pairs
        .iter()
        .find(|(k, v)| k == "fqdn" && !v.is_empty())
        .map(|(_, v)| v.clone())
}

fn ipv4(ip: &str) -> Result<std::net::Ipv4Addr, Box<Response>> {
    ip.parse().map_err(|_| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("invalid IP address {ip}: use an IPv4 address such as 10.32.0.1\n"),
            )
                .into_response(),
        )
    })
}

async fn dns_add(
    State(api): State<Api>,
    Path((container, ip)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let addr = match ipv4(&ip) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(fqdn) = fqdn_of(&form(q, &body)) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing fqdn: give the name as fqdn=NAME\n",
        )
            .into_response();
    };
    let (reply, rx) = oneshot::channel();
    let req = DnsRequest::Add {
        container,
        addr,
        fqdn,
        reply,
    };
    ask_dns(&api, req, rx).await
}

async fn dns_remove(
    api: &Api,
    container: Option<String>,
    addr: Option<std::net::Ipv4Addr>,
    fqdn: Option<String>,
) -> Response {
    let (reply, rx) = oneshot::channel();
    let req = DnsRequest::Remove {
        container,
        addr,
        fqdn,
        reply,
    };
    ask_dns(api, req, rx).await
}

async fn dns_remove_all(State(api): State<Api>, RawQuery(q): RawQuery, body: Bytes) -> Response {
    dns_remove(&api, None, None, fqdn_of(&form(q, &body))).await
}

async fn dns_remove_container(
    State(api): State<Api>,
    Path(container): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    dns_remove(&api, Some(container), None, fqdn_of(&form(q, &body))).await
}

async fn dns_remove_ip(
    State(api): State<Api>,
    Path((container, ip)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let addr = match ipv4(&ip) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    dns_remove(&api, Some(container), Some(addr), fqdn_of(&form(q, &body))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_pass_and_rebound_names_do_not() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for ok in [
            "127.0.0.1",
            "127.0.0.1:6784",
            "localhost",
            "LOCALHOST:6784",
            "127.3.2.1:80",
            "[::1]",
            "[::1]:6784",
            "::1",
        ] {
            assert!(host_allowed(ok, lo), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:6784",
            "localhost.evil.example",
            "192.0.2.1:6784",
            "",
            "127.0.0.1:notaport",
            "[::1",
            "[::1]x",
            "0.0.0.0",
        ] {
            assert!(!host_allowed(bad, lo), "{bad}");
        }
        // Bound to a LAN address: that address is asked by name too.
        let lan: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(host_allowed("192.0.2.1:6784", lan));
        assert!(!host_allowed("192.0.2.2:6784", lan));
        // Bound to all addresses: any address literal, never a name.
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(host_allowed("198.51.100.7:6784", any));
        assert!(!host_allowed("evil.example", any));
    }
}
