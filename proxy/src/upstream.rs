//! The Docker engine behind the proxy: its address (`unix://` or `tcp://`),
//! one HTTP/1 connection per request (as weave does; no pool to go stale),
//! and small JSON helpers for the calls the proxy makes itself.

use std::path::PathBuf;
use std::str::FromStr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

/// The body type used in both directions.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A complete body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// A `GET path` to the Docker engine, with no body.
pub fn get_request(path: &str) -> Result<Request<Body>, UpstreamError> {
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, "docker")
        .body(empty())
        .map_err(|e| UpstreamError::Json {
            path: path.into(),
            error: e.to_string(),
        })
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The default Docker API address.
pub const DEFAULT_DOCKER_API: &str = "unix:///var/run/docker.sock";

/// Why Docker could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "invalid Docker address {0:?}: use unix:///path/to/docker.sock or tcp://HOST:PORT (TLS is not supported)"
    )]
    BadAddr(String),
    #[error("cannot reach the Docker engine at {addr}: {source}; is Docker running?")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("talking to the Docker engine failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the Docker engine answered {status} to {path}: {message}")]
    Status {
        status: StatusCode,
        path: String,
        message: String,
    },
    #[error("the Docker engine answered {path} with something that is not JSON: {error}")]
    Json { path: String, error: String },
}

/// Where the Docker engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DockerAddr {
    Unix(PathBuf),
    Tcp(String),
}

impl FromStr for DockerAddr {
    type Err = UpstreamError;

    fn from_str(s: &str) -> Result<Self, UpstreamError> {
        if let Some(p) = s.strip_prefix("unix://") {
            if p.is_empty() {
                return Err(UpstreamError::BadAddr(s.into()));
            }
            return Ok(DockerAddr::Unix(p.into()));
        }
        if let Some(hp) = s.strip_prefix("tcp://") {
            let hp = hp.trim_end_matches('/');
            if hp.is_empty() || !hp.contains(':') {
                return Err(UpstreamError::BadAddr(s.into()));
            }
            return Ok(DockerAddr::Tcp(hp.into()));
        }
        if s.starts_with('/') {
            return Ok(DockerAddr::Unix(s.into()));
        }
        Err(UpstreamError::BadAddr(s.into()))
    }
}

impl std::fmt::Display for DockerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DockerAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            DockerAddr::Tcp(hp) => write!(f, "tcp://{hp}"),
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Body>, UpstreamError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        // Ends when the exchange (or the upgraded stream) is over.
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

impl DockerAddr {
    /// Sends one request on a fresh connection.
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, UpstreamError> {
        let connect_err = |source| UpstreamError::Connect {
            addr: self.to_string(),
            source,
        };
        let mut sender = match self {
            DockerAddr::Unix(p) => {
                handshake(
                    tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(connect_err)?,
                )
                .await?
            }
            DockerAddr::Tcp(hp) => {
                handshake(
                    tokio::net::TcpStream::connect(hp)
                        .await
                        .map_err(connect_err)?,
                )
                .await?
            }
        };
        Ok(sender.send_request(req).await?)
    }

    /// A request of the proxy's own, with an optional JSON body; returns the
    /// status and the whole body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "docker");
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                full(v.to_string())
            }
            None => empty(),
        };
        let req = b.body(body).map_err(|e| UpstreamError::Json {
            path: path.into(),
            error: e.to_string(),
        })?;
        let resp = self.send(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }

    /// `GET path` that must answer 200 with JSON.
    pub async fn json(&self, path: &str) -> Result<Value, UpstreamError> {
        let (status, bytes) = self.call(Method::GET, path, None).await?;
        if !status.is_success() {
            return Err(UpstreamError::Status {
                status,
                path: path.into(),
                message: docker_message(&bytes),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| UpstreamError::Json {
            path: path.into(),
            error: e.to_string(),
        })
    }
}

/// The `message` of a Docker error body, or the body itself.
pub fn docker_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_addresses_parse() {
        assert_eq!(
            "unix:///var/run/docker.sock".parse::<DockerAddr>().unwrap(),
            DockerAddr::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            "tcp://127.0.0.1:2375".parse::<DockerAddr>().unwrap(),
            DockerAddr::Tcp("127.0.0.1:2375".into())
        );
        assert_eq!(
            "/run/d.sock".parse::<DockerAddr>().unwrap().to_string(),
            "unix:///run/d.sock"
        );
        for bad in [
            "unix://",
            "tcp://",
            "http://x:1",
            "docker.sock",
            "tcp://host",
        ] {
            let e = bad.parse::<DockerAddr>().unwrap_err().to_string();
            assert!(e.contains("unix://"), "{bad}: {e}");
        }
    }

    #[test]
    fn docker_error_messages_are_read() {
        assert_eq!(
            docker_message(br#"{"message":"No such image: x"}"#),
            "No such image: x"
        );
        assert_eq!(docker_message(b"plain\n"), "plain");
    }
}
