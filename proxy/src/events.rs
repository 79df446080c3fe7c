//! Releasing addresses of dead containers: a Docker events watcher. When a
//! container dies, its addresses go back to IPAM after a grace period
//! (`docker restart` and restart policies bring it back within it, and the
//! next attach finds the same addresses since IPAM is idempotent per id).

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::ProxyConfig;
use crate::attach;
use crate::upstream::{UpstreamError, empty};

/// `filters={"type":["container"],"event":["die"]}`, URL-encoded.
const DIE_EVENTS: &str =
    "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22die%22%5D%7D";

/// The container id of a `die` event line, if it is one.
pub fn died(line: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(line).ok()?;
    let action = v
        .get("Action")
        .or_else(|| v.get("status"))
        .and_then(Value::as_str)?;
    if action != "die" {
        return None;
    }
    v.get("Actor")
        .and_then(|a| a.get("ID"))
        .or_else(|| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Watches Docker's events until `shutdown`, reconnecting on errors.
pub async fn watch(config: Arc<ProxyConfig>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch_once(&config, &shutdown) => {
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

async fn watch_once(
    config: &Arc<ProxyConfig>,
    shutdown: &CancellationToken,
) -> Result<(), UpstreamError> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(DIE_EVENTS)
        .header(header::HOST, "docker")
        .body(empty())
        .map_err(|e| UpstreamError::Json {
            path: DIE_EVENTS.into(),
            error: e.to_string(),
        })?;
    let mut body = config.docker.send(req).await?.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            if let Some(id) = died(&line) {
                let config = config.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = shutdown.cancelled() => {}
                        _ = tokio::time::sleep(config.release_grace) => release_if_dead(&config, &id).await,
                    }
                });
            }
        }
    }
    Ok(())
}

async fn release_if_dead(config: &ProxyConfig, id: &str) {
    let path = format!("/containers/{id}/json");
    match config.docker.call(Method::GET, &path, None).await {
        Ok((status, body)) if status.is_success() => {
            let running = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("State")?.get("Running")?.as_bool())
                .unwrap_or(false);
            if running {
                return;
            }
        }
        Ok((StatusCode::NOT_FOUND, _)) => {}
        Ok((status, _)) => {
            warn!(container = %id, %status, "cannot check whether a dead container came back; keeping its addresses");
            return;
        }
        Err(e) => {
            warn!(container = %id, error = %e, "cannot check whether a dead container came back; keeping its addresses");
            return;
        }
    }
    match attach::release(config.router_api, id).await {
        Ok(()) => info!(container = %id, "released the addresses of a dead container"),
        Err(e) => {
            warn!(container = %id, error = %e, "cannot release the addresses of a dead container")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn die_events_are_recognised() {
        let line = br#"{"status":"die","id":"abc","from":"busybox","Type":"container","Action":"die","Actor":{"ID":"abc","Attributes":{"exitCode":"0"}},"scope":"local","time":1}"#;
        assert_eq!(died(line), Some("abc".into()));
        assert_eq!(died(br#"{"Action":"start","Actor":{"ID":"abc"}}"#), None);
        assert_eq!(died(br#"{"status":"die","id":"old"}"#), Some("old".into()));
        assert_eq!(died(b"not json"), None);
    }
}
