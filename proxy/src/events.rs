//! A Docker events watcher for containers this proxy created (labelled
//! with [`PROXY_LABEL`]): when one starts without a start request through
//! the proxy (a restart policy, a daemon restart), it is attached, since its
//! wait shim would otherwise wait forever. IPAM gives it the same addresses
//! again (it is idempotent per container id, and keeps a dead container's
//! addresses for a grace period). Deaths are not handled here: the
//! router's own watcher ([`crate::liveness`]) reports them for every
//! container, proxied or not.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::Method;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::ProxyConfig;
use crate::intercept::PROXY_LABEL;
use crate::server;
use crate::upstream::{UpstreamError, get_request};

/// `filters={"type":["container"],"event":["start"]}`, URL-encoded.
const EVENTS: &str =
    "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%5D%7D";

/// A container event the watcher acts on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Start(String),
}

/// Reads one event line; `None` unless it is a start of a container
/// whose [`PROXY_LABEL`] (Docker repeats labels in the event) is `owner`.
pub fn parse_event(line: &[u8], owner: &str) -> Option<Event> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let action = v.get("Action").and_then(Value::as_str)?;
    let actor = v.get("Actor")?;
    let labelled = actor
        .get("Attributes")
        .and_then(|a| a.get(PROXY_LABEL))
        .and_then(Value::as_str);
    if labelled != Some(owner) {
        return None;
    }
    let id = actor.get("ID").and_then(Value::as_str)?.to_string();
    match action {
        "start" => Some(Event::Start(id)),
        _ => None,
    }
}

/// Watches Docker's events until `shutdown`, reconnecting on errors.
pub async fn watch(config: Arc<ProxyConfig>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch_once(&config) => {
                if let Err(e) = r {
                    debug!(error = %e, "Docker events stream ended; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn watch_once(config: &Arc<ProxyConfig>) -> Result<(), UpstreamError> {
    let req = get_request(EVENTS)?;
    let mut body = config.docker.send(req).await?.into_body();
    let owner = config.owner();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            let config = config.clone();
            if let Some(Event::Start(id)) = parse_event(&line, &owner) {
                tokio::spawn(async move { attach_on_start(&config, &id).await });
            }
        }
    }
    Ok(())
}

/// How long [`reattach_all`] waits for the router's API, which comes up
/// after the proxy, before it goes on regardless.
pub const ROUTER_API_WAIT: Duration = Duration::from_secs(60);
/// How often it asks.
const ROUTER_API_POLL: Duration = Duration::from_millis(100);

/// Waits until the router's API answers (true), or `limit` passed or
/// shutdown (false).
async fn router_answers(
    config: &ProxyConfig,
    shutdown: &CancellationToken,
    limit: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if crate::attach::router_call(&config.router_api, Method::GET, "/status")
            .await
            .is_ok_and(|(s, _)| s.is_success())
        {
            return true;
        }
        if tokio::time::Instant::now() >= deadline || shutdown.is_cancelled() {
            return false;
        }
        tokio::time::sleep(ROUTER_API_POLL).await;
    }
}

/// At proxy start: attaches every running container this proxy created that
/// is not attached (started while the router was down, so its shim waits),
/// and registers the names of those still attached (a router restart lost
/// them). It first waits for the router's API ([`ROUTER_API_WAIT`]): names
/// given before it answers would be lost. Each attach is retried with
/// backoff (2 s, ×1.5, up to a minute), as weave does.
pub async fn reattach_all(config: Arc<ProxyConfig>, shutdown: CancellationToken) {
    if !router_answers(&config, &shutdown, ROUTER_API_WAIT).await {
        debug!("the router's API does not answer yet; re-attaching anyway");
    }
    let filter = serde_json::json!({ "label": [format!("{PROXY_LABEL}={}", config.owner())] });
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("filters", &filter.to_string())
        .finish();
    let list = match config
        .docker
        .json(&format!("/containers/json?{query}"))
        .await
    {
        Ok(v) => v,
        Err(e) => {
            debug!(error = %e, "cannot list containers to re-attach");
            return;
        }
    };
    let ids: Vec<String> = list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("Id")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for id in ids {
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut wait = Duration::from_secs(2);
            loop {
                match server::attach_started(&config, &id, true).await {
                    Ok(()) => return,
                    Err(f) if wait > Duration::from_secs(60) => {
                        warn!(container = %id, error = %f.message, "cannot re-attach a container; killing it");
                        server::kill_if_same(&config, &id, f.pid).await;
                        return;
                    }
                    Err(f) => {
                        debug!(container = %id, error = %f.message, "re-attach failed; retrying")
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = wait.mul_f64(1.5);
            }
        });
    }
}

/// Attaches a container Docker started by itself; kills that run if the
/// attach fails, as weave does, rather than leave it waiting forever.
async fn attach_on_start(config: &ProxyConfig, id: &str) {
    if let Err(failure) = server::attach_started(config, id, true).await {
        warn!(container = %id, error = %failure.message, "cannot attach a restarted container");
        server::kill_if_same(config, id, failure.pid).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiting_for_the_router_is_bounded_and_ends_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        // Nobody listens on the socket nor on this port.
        let api =
            meshnet_router::api_client::Endpoint::new("127.0.0.1:9".parse().unwrap(), dir.path());
        let docker = "unix:///nonexistent.sock".parse().unwrap();
        let config = ProxyConfig::new(dir.path(), docker, api);
        let shutdown = CancellationToken::new();
        let start = std::time::Instant::now();
        assert!(!router_answers(&config, &shutdown, Duration::from_millis(300)).await);
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert!(start.elapsed() < ROUTER_API_WAIT);
        shutdown.cancel();
        let start = std::time::Instant::now();
        assert!(!router_answers(&config, &shutdown, ROUTER_API_WAIT).await);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "shutdown ends the wait"
        );
    }

    #[test]
    fn only_our_containers_events_count() {
        let die = br#"{"status":"die","id":"abc","from":"busybox","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"0","works.meshnet.proxy":"/run/a.sock"}},"scope":"local","time":1}"#;
        // Deaths are the router's liveness watcher's business.
        assert_eq!(parse_event(die, "/run/a.sock"), None);
        let start =
            br#"{"Action":"start","Actor":{"ID":"abc","Attributes":{"works.meshnet.proxy":"/p"}}}"#;
        assert_eq!(parse_event(start, "/p"), Some(Event::Start("abc".into())));
        assert_eq!(parse_event(start, "/q"), None);
        let unlabelled = br#"{"Action":"start","Actor":{"ID":"abc","Attributes":{}}}"#;
        assert_eq!(parse_event(unlabelled, "/p"), None);
        let other = br#"{"Action":"attach","Actor":{"ID":"abc","Attributes":{"works.meshnet.proxy":"/p"}}}"#;
        assert_eq!(parse_event(other, "/p"), None);
        assert_eq!(parse_event(b"not json", "/p"), None);
    }
}
