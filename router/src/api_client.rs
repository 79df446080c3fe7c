//! The client side of the router's HTTP API, for the CLI and the Docker
//! proxy: one HTTP/1 request over TCP (hyper), the whole answer back.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// How long connecting to the router may take (it is local).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take (`/ring` waits for consensus).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// An answer from the router.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

/// Why the router could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(
        "meshnet is not running (nothing answers on {0}): start it with `meshnet launch`, or set MESHNET_HTTP_ADDR to the router's API address"
    )]
    NotRunning(SocketAddr),
    #[error("the router on {addr} did not answer {path} within {ANSWER_TIMEOUT:?}")]
    Timeout { addr: SocketAddr, path: String },
    #[error("talking HTTP to the router on {addr}: {reason}")]
    Http { addr: SocketAddr, reason: String },
}

/// Sends one request (`form` as an urlencoded body) and reads the answer.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer, CallError> {
    let http = |e: &dyn std::fmt::Display| CallError::Http {
        addr,
        reason: e.to_string(),
    };
    let stream =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            _ => return Err(CallError::NotRunning(addr)),
        };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    tokio::spawn(conn);
    let body = if form.is_empty() {
        Bytes::new()
    } else {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        ser.extend_pairs(form);
        Bytes::from(ser.finish())
    };
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(body))
        .map_err(|e| http(&e))?;
    let resp = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| CallError::Timeout {
            addr,
            path: path.into(),
        })?
        .map_err(|e| http(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(&e))?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
