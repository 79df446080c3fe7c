//! The proxy's HTTP side: every request goes to Docker on its own
//! connection and the answer comes back unchanged — streamed frame by frame
//! (`logs -f`, `events`, `build`), or, on `101 Switching Protocols` (`run
//! -it`, `exec -it`, `attach`), both connections are upgraded and spliced.
//! `containers/create` and `containers/{id}/start|restart` are rewritten or
//! followed by an attach (see [`crate::intercept`]); with
//! `--rewrite-inspect`, `containers/{id}/json` (and `exec/{id}/json`)
//! answers show the mesh address.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::ProxyConfig;
use crate::attach;
use crate::intercept::{self, InterceptError, Route};
use crate::upstream::{Body, UpstreamError, full};
use meshnet_router::datapath::{self, Netns};
use meshnet_router::dataplane::BRIDGE_NAME;

/// Serves one client connection (unix or TCP) until it closes.
pub async fn serve_connection<S>(config: Arc<ProxyConfig>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let config = config.clone();
        async move { Ok::<_, Infallible>(handle(&config, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(error = %e, "proxy client connection ended with an error");
    }
}

/// A JSON error in Docker's shape, so the docker CLI prints the message.
fn error(status: StatusCode, message: String) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An error of meshnet's own (not Docker's): said so in the message.
fn own_error(status: StatusCode, what: impl std::fmt::Display) -> Response<Body> {
    error(status, format!("meshnet proxy: {what}"))
}

fn upstream_error(e: UpstreamError) -> Response<Body> {
    own_error(StatusCode::BAD_GATEWAY, e)
}

async fn handle(config: &ProxyConfig, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match intercept::route(&path) {
        Route::Create if req.method() == Method::POST => create(config, req).await,
        Route::Start(id) if req.method() == Method::POST => {
            let id = id.to_string();
            start(config, req, &id).await
        }
        route @ (Route::Inspect | Route::ExecInspect)
            if req.method() == Method::GET && config.rewrite_inspect =>
        {
            inspect(config, req, route).await
        }
        _ => pass(config, req.map(|b| b.boxed())).await,
    }
}

/// Forwards a request and returns Docker's answer untouched; on `101`
/// splices the two upgraded connections.
async fn pass(config: &ProxyConfig, mut req: Request<Body>) -> Response<Body> {
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = match config.docker.send(req).await {
        Ok(r) => r,
        Err(e) => return upstream_error(e),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let docker_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, docker) = match tokio::join!(client_upgrade, docker_upgrade) {
                (Ok(c), Ok(d)) => (c, d),
                (c, d) => {
                    warn!(client = ?c.err(), docker = ?d.err(), "hijacked stream could not be upgraded");
                    return;
                }
            };
            let (mut client, mut docker) = (TokioIo::new(client), TokioIo::new(docker));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut docker).await {
                debug!(error = %e, "hijacked stream ended");
            }
        });
    }
    resp.map(|b| b.boxed())
}

/// Reads a whole request body (create bodies are small JSON).
async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    body.collect().await.map(|c| c.to_bytes()).map_err(|e| {
        own_error(
            StatusCode::BAD_REQUEST,
            format!("cannot read the request: {e}"),
        )
    })
}

/// Every rewrite error is the request's fault (a bad body, a bad
/// `MESHNET_CIDR`, no command): 400, said to be meshnet's.
fn intercept_error(e: InterceptError) -> Response<Body> {
    own_error(StatusCode::BAD_REQUEST, e)
}

/// `POST /containers/create`: rewrite the body so the shim runs first,
/// unless the container stays off the mesh (then pass the bytes through).
async fn create(config: &ProxyConfig, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let original =
        |parts: http::request::Parts, bytes: Bytes| Request::from_parts(parts, full(bytes));
    // Not JSON: Docker gives the client the right error.
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return pass(config, original(parts, bytes)).await;
    };
    let Ok(create) = intercept::parse_create(&value) else {
        return pass(config, original(parts, bytes)).await;
    };
    match intercept::mesh_addrs(&create.env, &create.network_mode, config.default_ipalloc) {
        Ok(Some(_)) => {}
        Ok(None) => return pass(config, original(parts, bytes)).await,
        Err(e) => return intercept_error(e),
    }
    let image = if create.entrypoint.is_empty() {
        let path = format!("/images/{}/json", encode_path(&create.image));
        let (status, body) = match config.docker.call(Method::GET, &path, None).await {
            Ok(x) => x,
            Err(e) => return upstream_error(e),
        };
        if !status.is_success() {
            // "No such image": the docker CLI pulls on this 404 and retries.
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => Some(intercept::image_defaults(&v)),
            Err(e) => {
                return own_error(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot read the image of {}: {e}", create.image),
                );
            }
        }
    } else {
        None
    };
    if let Err(e) = intercept::rewrite_create(
        &mut value,
        image.as_ref(),
        &config.shim_dir,
        &config.owner(),
    ) {
        return intercept_error(e);
    }
    if config.dns
        && let Some(dns) = attach::dns_settings(&config.router_api).await
    {
        let name = parts.uri.query().and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.into_owned())
        });
        let name = config.hostname.hostname(name.as_deref(), &value);
        if let Err(e) = intercept::set_dns(
            &mut value,
            name.as_deref(),
            dns.addr.as_deref(),
            &dns.domain,
        ) {
            return intercept_error(e);
        }
    }
    let body = value.to_string();
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    pass(config, Request::from_parts(parts, full(body))).await
}

/// The largest `docker inspect` answer the proxy rewrites; a larger one
/// (thousands of mounts or labels) passes through unchanged.
pub const MAX_INSPECT_BODY: usize = 4 << 20;

/// `GET /containers/{id}/json` (and `/exec/{id}/json`) with
/// `--rewrite-inspect`: Docker's answer, with the mesh interface's first
/// address and MAC in the container's `NetworkSettings` when it has one
/// (weave's `--rewrite-inspect`; see [`intercept::inspected_container`]).
async fn inspect(config: &ProxyConfig, req: Request<Incoming>, route: Route<'_>) -> Response<Body> {
    let resp = pass(config, req.map(|b| b.boxed())).await;
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match collect_limited(body, MAX_INSPECT_BODY).await {
        Ok(b) => b,
        Err(Unread::TooBig(body)) => return Response::from_parts(parts, body),
        Err(Unread::Failed(e)) => return upstream_error(UpstreamError::Http(e)),
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, full(bytes));
    };
    let Some(container) = intercept::inspected_container(&mut value, &route) else {
        return Response::from_parts(parts, full(bytes));
    };
    let Some(pid) = intercept::running_pid(container) else {
        return Response::from_parts(parts, full(bytes));
    };
    // An attach in progress (the start request, or Docker's start event)
    // finishes first, so an inspect right after `docker run` sees it.
    drop(config.attach_lock.lock().await);
    let found = match (Netns::current(), Netns::of_pid(pid)) {
        (Ok(host), Ok(ns)) => datapath::container_addrs(&host, &ns, BRIDGE_NAME).await,
        _ => Ok(None),
    };
    match found {
        Ok(Some(a)) if !a.addrs.is_empty() => {
            intercept::rewrite_inspect(container, &a.mac.to_string(), a.addrs[0]);
        }
        Ok(_) => return Response::from_parts(parts, full(bytes)),
        Err(e) => {
            warn!(pid, error = %e, "cannot read a container's mesh address for inspect");
            return Response::from_parts(parts, full(bytes));
        }
    }
    let body = value.to_string();
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, full(body))
}

/// Why [`collect_limited`] gave no whole body.
enum Unread {
    /// Over the limit: the same body, what was read put back in front.
    TooBig(Body),
    Failed(hyper::Error),
}

/// Reads a body of at most `limit` bytes.
async fn collect_limited(mut body: Body, limit: usize) -> Result<Bytes, Unread> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Unread::Failed)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers: none in Docker's JSON answers
        };
        buf.extend_from_slice(&data);
        if buf.len() > limit {
            let read = full(buf.freeze());
            return Err(Unread::TooBig(Prefixed(Some(read), body).boxed()));
        }
    }
    Ok(buf.freeze())
}

/// A body whose first part was already read: that part, then the rest.
struct Prefixed(Option<Body>, Body);

impl hyper::body::Body for Prefixed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        if let Some(first) = this.0.as_mut() {
            match std::pin::Pin::new(first).poll_frame(cx) {
                Poll::Ready(None) => this.0 = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut this.1).poll_frame(cx)
    }
}

/// Percent-encodes an image reference for a path (`/` in names is fine for
/// Docker's router, but `?` or `#` must not end the path).
fn encode_path(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'/'
            | b':'
            | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST /containers/{id}/start|restart`: after Docker started it, attach
/// it (the shim is waiting for `ethwe`), then give Docker's answer back.
async fn start(config: &ProxyConfig, req: Request<Incoming>, id: &str) -> Response<Body> {
    let resp = pass(config, req.map(|b| b.boxed())).await;
    if !resp.status().is_success() {
        return resp;
    }
    match attach_started(config, id, false).await {
        Ok(()) => resp,
        Err(failure) => {
            let killed = kill_if_same(config, id, failure.pid).await;
            let what = if killed { ", so it was killed" } else { "" };
            own_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "cannot attach container {id} to the mesh{what}: {}",
                    failure.message
                ),
            )
        }
    }
}

/// Why [`attach_started`] failed, and for which run of the container.
#[derive(Debug)]
pub struct AttachFailure {
    /// The process that was being attached (0: not known).
    pub pid: u32,
    pub message: String,
}

impl AttachFailure {
    fn new(pid: u32, e: impl std::fmt::Display) -> AttachFailure {
        AttachFailure {
            pid,
            message: e.to_string(),
        }
    }
}

/// Kills the container if `pid` is still its process: its wait shim would
/// otherwise wait forever (weave does the same). A later run (a restart
/// policy) is left alone. Returns whether it killed.
pub async fn kill_if_same(config: &ProxyConfig, id: &str, pid: u32) -> bool {
    let path = format!("/containers/{}/json", encode_path(id));
    let current = config
        .docker
        .json(&path)
        .await
        .ok()
        .and_then(|v| v.get("State")?.get("Pid")?.as_u64());
    if pid == 0 || current != Some(u64::from(pid)) {
        return false;
    }
    warn!(container = %id, pid, "attach failed; killing the container");
    let kill = format!("/containers/{}/kill", encode_path(id));
    config.docker.call(Method::POST, &kill, None).await.is_ok()
}

/// Attaches a started container if it was created through the proxy;
/// with `if_missing`, only when it has no `ethwe` on our bridge yet (a
/// Docker start event after the start request already attached it).
pub async fn attach_started(
    config: &ProxyConfig,
    id: &str,
    if_missing: bool,
) -> Result<(), AttachFailure> {
    let _one_at_a_time = config.attach_lock.lock().await;
    let inspect = config
        .docker
        .json(&format!("/containers/{}/json", encode_path(id)))
        .await
        .map_err(|e| AttachFailure::new(0, e))?;
    if !intercept::waits_for_mesh(&inspect) {
        return Ok(());
    }
    let env = intercept::str_slice(inspect.get("Config").and_then(|c| c.get("Env")));
    let mode = inspect
        .get("HostConfig")
        .and_then(|h| h.get("NetworkMode"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let full_id = inspect.get("Id").and_then(Value::as_str).unwrap_or(id);
    let state = inspect.get("State");
    let running = state
        .and_then(|s| s.get("Running"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let pid = state
        .and_then(|s| s.get("Pid"))
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    if !running || pid == 0 {
        // Already gone (attached by the start event, ran and exited):
        // nothing to attach, and nothing wrong.
        return Ok(());
    }
    // The shim is in place, so the container expects an attach even if it
    // would not qualify now; default to the default subnet then.
    let specs = intercept::mesh_addrs(&env, mode, config.default_ipalloc)
        .map_err(|e| AttachFailure::new(pid, e))?
        .unwrap_or_else(|| vec![intercept::AddrSpec::Default]);
    if attach::is_attached(pid).await {
        // This run is attached already: by the other path (the start
        // request and Docker's start event race), or before the router
        // restarted, in which case its names come back.
        if !if_missing {
            return Ok(());
        }
        if let (Ok(host), Ok(ns)) = (Netns::current(), Netns::of_pid(pid))
            && let Ok(Some(a)) = datapath::container_addrs(&host, &ns, BRIDGE_NAME).await
        {
            let names = intercept::dns_names(&inspect);
            attach::register_names(&config.router_api, full_id, &a.addrs, &names).await;
        }
        return Ok(());
    }
    let hosts = config
        .rewrite_hosts
        .then(|| crate::hosts::hosts_inputs(&inspect))
        .flatten();
    let write_hosts = |addrs: &[ipnet::Ipv4Net]| {
        let Some((path, hostname, domain, extra)) = &hosts else {
            return;
        };
        let ips: Vec<_> = addrs.iter().map(|a| a.addr()).collect();
        let text = crate::hosts::hosts_file(hostname, domain, &ips, extra);
        // Docker's file is good enough when this fails; weave carries on too.
        if let Err(e) = crate::hosts::rewrite_hosts_file(std::path::Path::new(path), &text) {
            warn!(container = %full_id, %path, error = %e, "cannot rewrite the container's /etc/hosts");
        }
    };
    let addrs = match attach::attach(
        &config.router_api,
        full_id,
        pid,
        &specs,
        config.multicast_route,
        write_hosts,
    )
    .await
    {
        Ok(a) => a,
        // It ran and exited while we attached (the other attach, from the
        // start event or request, let it run): nothing wrong.
        Err(_) if !process_alive(pid) => return Ok(()),
        Err(e) => return Err(AttachFailure::new(pid, e)),
    };
    let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    info!(container = %full_id, addrs = %shown.join(" "), "attached");
    // Outside the attach lock: a slow router must not delay other attaches.
    let (api, id, names) = (
        config.router_api.clone(),
        full_id.to_string(),
        intercept::dns_names(&inspect),
    );
    tokio::spawn(async move { attach::register_names(&api, &id, &addrs, &names).await });
    Ok(())
}

/// Whether `pid` is still a live process. An exited container process
/// can linger as a zombie until its shim reaps it: `/proc/PID` is still
/// there, but its namespaces are gone, so that is what is checked.
fn process_alive(pid: u32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_stay_readable_in_paths() {
        assert_eq!(encode_path("busybox:latest"), "busybox:latest");
        assert_eq!(
            encode_path("reg.example:5000/a/b@sha256:ab"),
            "reg.example:5000/a/b@sha256:ab"
        );
        assert_eq!(encode_path("a?b#c d"), "a%3Fb%23c%20d");
    }

    /// A body of several frames, as Docker's chunked answers come.
    fn frames(parts: &[&'static str]) -> Body {
        parts
            .iter()
            .rev()
            .fold(crate::upstream::empty(), |rest, p| {
                Prefixed(Some(full(*p)), rest).boxed()
            })
    }

    #[tokio::test]
    async fn an_inspect_answer_over_the_limit_passes_unchanged() {
        let small = collect_limited(frames(&["{\"a\":", "1}"]), 7).await;
        assert!(matches!(small, Ok(ref b) if b == "{\"a\":1}"));
        // One byte over: the whole body still comes out, in order.
        let Err(Unread::TooBig(body)) = collect_limited(frames(&["{\"a\":", "12}"]), 7).await
        else {
            panic!("a body over the limit was collected");
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(all, "{\"a\":12}");
        // The named limit: exactly that much is rewritten, one byte more is not.
        let at_limit = full(vec![b' '; MAX_INSPECT_BODY]);
        assert!(collect_limited(at_limit, MAX_INSPECT_BODY).await.is_ok());
        let over = full(vec![b' '; MAX_INSPECT_BODY + 1]);
        assert!(matches!(
            collect_limited(over, MAX_INSPECT_BODY).await,
            Err(Unread::TooBig(_))
        ));
    }

    #[test]
    fn a_zombie_is_not_alive() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id();
        // Exited but not reaped yet: a zombie whose /proc entry remains.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
        {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
        assert!(!process_alive(pid));
        child.wait().expect("reap");
        assert!(process_alive(std::process::id()));
    }
}
