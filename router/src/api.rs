//! The HTTP API (weave's paths, reference §2.1–2.2): the control API on
//! `MESHNET_HTTP_ADDR` and the read-only status/metrics endpoint.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{ApiRequest, Snapshot};
use crate::{metrics, status};

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

/// Routes that only read.
pub fn read_only(api: Api) -> Router {
    Router::new()
        .route("/status", get(status_summary))
        .route("/status/{sub}", get(status_sub))
        .route("/report", get(report))
        .route("/metrics", get(metrics_text))
        .with_state(api)
}

/// The full control API.
pub fn control(api: Api) -> Router {
    read_only(api.clone()).merge(
        Router::new()
            .route("/connect", post(connect))
            .route("/forget", post(forget))
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

async fn status_sub(State(api): State<Api>, Path(sub): Path<String>) -> Response {
    let snap = match api.snapshot().await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match sub.as_str() {
        "peers" => text(status::peers(&snap)),
        "connections" => text(status::connections(&snap)),
        "targets" => text(status::targets(&snap)),
        other => (
            StatusCode::NOT_FOUND,
            format!(
                "Invalid 'meshnet status' sub-command: {other}; use one of: peers, connections, targets\n"
            ),
        )
            .into_response(),
    }
}

async fn report(State(api): State<Api>) -> Response {
    match api.snapshot().await {
        Ok(s) => {
            let body = serde_json::to_string_pretty(&status::report(&s)).unwrap_or_default();
            ([(header::CONTENT_TYPE, "application/json")], body + "\n").into_response()
        }
        Err(r) => r,
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
