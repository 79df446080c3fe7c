//! The client side of the router's HTTP API, for the CLI, the Docker proxy
//! and anything else that talks to the router: one HTTP/1 request (hyper),
//! the whole answer back.
//!
//! Callers name the router by an [`Endpoint`] and never pick a transport:
//! a call goes over the root-only control socket
//! (`$MESHNET_RUN_DIR/`[`API_SOCKET`]) when there is one, which serves
//! everything; a read (GET/HEAD) falls back to the TCP address (which
//! serves only reads) when the socket is missing or not ours to use, so an
//! unprivileged user still gets status and report. A change that cannot use
//! the socket fails with an error saying why (not running, or not root).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Method, Request, StatusCode, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// File name of the control socket in the run dir: every API call,
/// including those that change state; mode 0600 (0660 with group
/// `meshnet` when that group exists).
pub const API_SOCKET: &str = "meshnet-api.sock";
/// How long connecting to the router may take (it is local).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long an answer may take (`/ring` waits for consensus).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where one router's API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The TCP address (`MESHNET_HTTP_ADDR`): reads only.
    pub http: SocketAddr,
    /// The control socket, when known: everything.
    pub socket: Option<PathBuf>,
}

impl Endpoint {
    /// The router whose TCP address is `http` and whose run dir is `run_dir`.
    pub fn new(http: SocketAddr, run_dir: &Path) -> Endpoint {
        Endpoint {
            http,
            socket: Some(run_dir.join(API_SOCKET)),
        }
    }
}

/// Only the TCP address: enough for reads; changes are refused by the
/// router (403).
impl From<SocketAddr> for Endpoint {
    fn from(http: SocketAddr) -> Endpoint {
        Endpoint { http, socket: None }
    }
}

impl From<&Endpoint> for Endpoint {
    fn from(e: &Endpoint) -> Endpoint {
        e.clone()
    }
}

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
    #[error(
        "meshnet is not running (no control socket at {0}): start it with `meshnet launch`, or set MESHNET_RUN_DIR to the router's run dir"
    )]
    NoSocket(PathBuf),
    #[error(
        "changing the router's state needs root: its control socket {0} is root-only (run this command as root, e.g. with sudo)"
    )]
    NotPermitted(PathBuf),
    #[error("the router at {at} did not answer {path} within {ANSWER_TIMEOUT:?}")]
    Timeout { at: String, path: String },
    #[error("talking HTTP to the router at {at}: {reason}")]
    Http { at: String, reason: String },
}

/// Sends one request (`form` as an urlencoded body) to the router at `to`
/// and reads the answer.
pub async fn call(
    to: impl Into<Endpoint>,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer, CallError> {
    let to = to.into();
    let read = matches!(method, Method::GET | Method::HEAD);
    if let Some(sock) = &to.socket {
        let why = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(sock))
            .await
        {
            Ok(Ok(s)) => return exchange(s, &sock.display().to_string(), method, path, form).await,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                CallError::NotPermitted(sock.clone())
            }
            _ => CallError::NoSocket(sock.clone()),
        };
        if !read {
            return Err(why);
        }
    }
    let stream = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect(to.http),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => return Err(CallError::NotRunning(to.http)),
    };
    exchange(stream, &to.http.to_string(), method, path, form).await
}

async fn exchange<S>(
    stream: S,
    at: &str,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer, CallError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: &dyn std::fmt::Display| CallError::Http {
        at: at.to_owned(),
        reason: e.to_string(),
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
        // The router checks Host on TCP; a unix socket has no host name.
        .header(header::HOST, "127.0.0.1")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(body))
        .map_err(|e| http(&e))?;
    let resp = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(req))
        .await
        .map_err(|_| CallError::Timeout {
            at: at.to_owned(),
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
