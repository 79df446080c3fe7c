//! Calls to the router's API from the CLI: [`meshnet_router::api_client`],
//! plus a blocking form for commands that have no runtime of their own.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use http::Method;

pub use meshnet_router::api_client::Answer;

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
    Ok(meshnet_router::api_client::call(addr, method, path, form).await?)
}
