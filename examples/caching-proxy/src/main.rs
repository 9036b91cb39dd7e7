//! A caching reverse proxy in front of any HTTP origin.
//!
//! ```text
//! ORIGIN=http://127.0.0.1:8000 LISTEN=127.0.0.1:8002 cargo run --release -p caching-proxy
//! ```
//!
//! `ORIGIN` (default `http://127.0.0.1:8000`) is where every request goes;
//! `LISTEN` (default `127.0.0.1:8002`) is where the proxy accepts them. The
//! server's deadlines and limits for clients are the `[server]` section of
//! herdsman's configuration (`HERDSMAN_ENV`, `herdsman.toml`,
//! `HERDSMAN__SERVER__*`; see `docs/CONFIGURATION.md`). It logs one line
//! when it starts. See the crate docs (`src/lib.rs`).

use std::process::ExitCode;

use caching_proxy::CachingProxy;
use herdsman::config::{Config, Environment};
use herdsman_axum::Server;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("caching-proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let origin = std::env::var("ORIGIN").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8002".into());
    let proxy = CachingProxy::new(&origin).map_err(|err| format!("ORIGIN = {origin:?}: {err}"))?;
    let config = Config::load(Environment::detect()?)
        .map_err(|err| format!("invalid configuration:\n{err}"))?;
    let server = Server::from_settings(&config.server)?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|err| format!("LISTEN = {listen:?}: {err}"))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        origin = %proxy.origin(),
        "caching-proxy started: caching {} in origin mode",
        proxy.origin()
    );
    proxy.serve_with(&server, listener).await?;
    Ok(())
}
