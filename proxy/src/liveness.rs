//! Container liveness for the router's IPAM and DNS: a watcher of Docker's
//! container events that tells the router when a container dies, starts
//! or is removed (`POST /containers/{id}/died|started|destroyed`). On
//! every (re)connect to Docker it first sends the set of running
//! containers (`PUT /containers/running`), so a container that died while
//! nobody watched (the router was down) is marked dead too.
//!
//! The router decides: IPAM keeps a dead container's addresses for its
//! grace period (a restart gets them back), then frees them; DNS drops the
//! container's names at once. The watcher runs in the router process
//! whenever a Docker engine is configured, with or without the proxy, so
//! containers attached with `meshnet attach` are covered as well.

use std::time::Duration;

use bytes::BytesMut;
use http::Method;
use http_body_util::BodyExt;
use meshnet_router::api_client::Endpoint;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::attach::router_call;
use crate::upstream::{DockerAddr, UpstreamError, get_request};

/// `filters={"type":["container"],"event":["start","die","destroy"]}`,
/// URL-encoded.
const EVENTS: &str = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%2C%22event%22%3A%5B%22start%22%2C%22die%22%2C%22destroy%22%5D%7D";
/// First wait before reconnecting to Docker; doubled up to
/// [`RECONNECT_MAX`] while Docker stays away.
const RECONNECT_MIN: Duration = Duration::from_secs(1);
/// Longest wait between reconnects: a Docker engine started after the
/// router is noticed within this time.
const RECONNECT_MAX: Duration = Duration::from_secs(30);
/// How often one report to the router is tried before it is given up
/// (the next reconnect's running set repairs what was lost).
const REPORT_ATTEMPTS: u32 = 5;
/// Wait between report attempts (the router's API may still be starting).
const REPORT_RETRY: Duration = Duration::from_millis(500);

/// A container event the router acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Died(String),
    Started(String),
    Destroyed(String),
}

impl Liveness {
    /// The router API path that reports it.
    pub fn path(&self) -> String {
        let (id, what) = match self {
            Liveness::Died(id) => (id, "died"),
            Liveness::Started(id) => (id, "started"),
            Liveness::Destroyed(id) => (id, "destroyed"),
        };
        format!("/containers/{id}/{what}")
    }
}

/// Reads one Docker event line: a container's start, die or destroy.
/// Ids that are not plain hex-or-name tokens are ignored (they end up in a
/// URL path).
pub fn parse(line: &[u8]) -> Option<Liveness> {
    let v: Value = serde_json::from_slice(line).ok()?;
    if v.get("Type").and_then(Value::as_str) != Some("container") {
        return None;
    }
    let id = v.get("Actor")?.get("ID")?.as_str()?;
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let id = id.to_string();
    match v.get("Action").and_then(Value::as_str)? {
        "start" => Some(Liveness::Started(id)),
        "die" => Some(Liveness::Died(id)),
        "destroy" => Some(Liveness::Destroyed(id)),
        _ => None,
    }
}

/// Watches Docker until `shutdown`, reconnecting (with backoff) whenever
/// the stream ends or Docker is not there.
pub async fn watch(docker: DockerAddr, api: Endpoint, shutdown: CancellationToken) {
    let mut wait = RECONNECT_MIN;
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = watch_once(&docker, &api, &shutdown, &mut wait) => match r {
                Ok(()) => debug!("Docker events stream ended; reconnecting"),
                Err(e) if !warned => {
                    warned = true;
                    info!(docker = %docker, error = %e, "not following container lives yet (Docker not reachable); retrying");
                }
                Err(e) => debug!(error = %e, "Docker events stream failed; reconnecting"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

async fn watch_once(
    docker: &DockerAddr,
    api: &Endpoint,
    shutdown: &CancellationToken,
    wait: &mut Duration,
) -> Result<(), UpstreamError> {
    let req = get_request(EVENTS)?;
    // Subscribe first, then list: an event between the two is in the
    // stream, so nothing falls in the gap.
    let resp = docker.send(req).await?;
    if !resp.status().is_success() {
        return Err(UpstreamError::Status {
            status: resp.status(),
            path: EVENTS.into(),
            message: String::new(),
        });
    }
    let mut body = resp.into_body();
    let running = running_ids(docker).await?;
    *wait = RECONNECT_MIN;
    report_running(api, &running, shutdown).await;
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            if let Some(event) = parse(&line) {
                report(api, &event).await;
            }
        }
    }
    Ok(())
}

/// The ids of the running containers.
async fn running_ids(docker: &DockerAddr) -> Result<Vec<String>, UpstreamError> {
    let list = docker.json("/containers/json").await?;
    Ok(list
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("Id")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// Sends the running set, retrying until the router answers (its API comes
/// up after the watcher starts).
async fn report_running(api: &Endpoint, ids: &[String], shutdown: &CancellationToken) {
    let form: Vec<(&str, &str)> = ids.iter().map(|id| ("id", id.as_str())).collect();
    let mut wait = REPORT_RETRY;
    loop {
        match meshnet_router::api_client::call(api, Method::PUT, "/containers/running", &form).await
        {
            Ok(a) if a.status.is_success() => {
                debug!(running = ids.len(), "told the router which containers run");
                return;
            }
            Ok(a) => {
                warn!(status = %a.status, body = %a.body.trim(), "the router refused the running containers");
                return;
            }
            Err(e) => debug!(error = %e, "router not answering yet; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(RECONNECT_MAX);
    }
}

async fn report(api: &Endpoint, event: &Liveness) {
    let path = event.path();
    for _ in 0..REPORT_ATTEMPTS {
        match router_call(api, Method::POST, &path).await {
            Ok((status, _)) if status.is_success() => {
                debug!(%path, "reported a container event");
                return;
            }
            Ok((status, body)) => {
                warn!(%path, %status, %body, "the router refused a container event");
                return;
            }
            Err(e) => debug!(%path, error = %e, "cannot report a container event; retrying"),
        }
        tokio::time::sleep(REPORT_RETRY).await;
    }
    warn!(%path, "cannot report a container event to the router; the next reconnect repairs it");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_die_and_destroy_of_any_container_count() {
        let die = br#"{"status":"die","id":"abc","from":"busybox","Type":"container","Action":"die","Actor":{"ID":"abc1","Attributes":{"exitCode":"0"}},"scope":"local","time":1}"#;
        assert_eq!(parse(die), Some(Liveness::Died("abc1".into())));
        assert_eq!(
            parse(die).map(|e| e.path()).as_deref(),
            Some("/containers/abc1/died")
        );
        let start = br#"{"Type":"container","Action":"start","Actor":{"ID":"f00"}}"#;
        assert_eq!(parse(start), Some(Liveness::Started("f00".into())));
        let gone = br#"{"Type":"container","Action":"destroy","Actor":{"ID":"f00"}}"#;
        assert_eq!(
            parse(gone).map(|e| e.path()).as_deref(),
            Some("/containers/f00/destroyed")
        );
        for other in [
            &br#"{"Type":"container","Action":"attach","Actor":{"ID":"f00"}}"#[..],
            br#"{"Type":"network","Action":"destroy","Actor":{"ID":"f00"}}"#,
            br#"{"Type":"container","Action":"die","Actor":{"ID":"../ip/x"}}"#,
            br#"{"Type":"container","Action":"die","Actor":{"ID":""}}"#,
            b"not json",
        ] {
            assert_eq!(parse(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
