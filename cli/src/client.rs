//! A small HTTP/1 client for the router's API (hyper over a TCP stream).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// An answer from the router.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

/// Why the router could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "meshnet is not running (nothing answers on {0}): start it with `meshnet launch`, or set MESHNET_HTTP_ADDR to the router's API address"
    )]
    NotRunning(SocketAddr),
}

/// Sends one request and reads the whole answer.
pub fn call(addr: SocketAddr, method: Method, path: &str, form: &[(&str, &str)]) -> Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    rt.block_on(call_async(addr, method, path, form))
}

/// The async form of [`call`].
pub async fn call_async(
    addr: SocketAddr,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer> {
    let stream = match tokio::time::timeout(
        std::time::Duration::from_secs(3),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => return Err(ClientError::NotRunning(addr).into()),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("talking HTTP to the router")?;
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
        .context("building the request")?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), sender.send_request(req))
        .await
        .context("the router did not answer within 30 s")?
        .context("sending the request to the router")?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .context("reading the router's answer")?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
