//! Calls to the router's API from the CLI: [`meshnet_router::api_client`],
//! plus a blocking form for commands that have no runtime of their own.

use anyhow::{Context, Result};
use http::Method;

pub use meshnet_router::api_client::{Answer, Endpoint};

/// Sends one request and reads the whole answer.
pub fn call(to: Endpoint, method: Method, path: &str, form: &[(&str, &str)]) -> Result<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    rt.block_on(call_async(to, method, path, form))
}

/// The async form of [`call`].
pub async fn call_async(
    to: Endpoint,
    method: Method,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Answer> {
    Ok(meshnet_router::api_client::call(to, method, path, form).await?)
}
