//! The herdsman demo app.
//!
//! ```text
//! cargo run --release -p active-users
//! cargo run --release -p active-users -- --upstream-only   # the upstream alone, on :4000
//! ```
//!
//! See the crate docs (`src/lib.rs`) for the variables it reads.
//!
//! What the operator must see (where it listens, this run's admin token)
//! goes to stderr directly, whatever `RUST_LOG` says, and never through
//! the log pipeline, where log shipping would carry the token. Logs go to
//! stderr too, with colours only when it is a terminal.
//!
//! SIGTERM or SIGINT: the server stops accepting, every event stream ends
//! with a last `shutdown` event (clients reconnect elsewhere at once),
//! requests in progress finish within `server.shutdown_timeout`, and the
//! process exits 0.

use std::{io::IsTerminal, net::SocketAddr, process::ExitCode};

use active_users::{with_demo_classes, Demo, Options, Upstream};
use herdsman::config::{Config, Environment};
use herdsman_axum::{shutdown::signal, Server};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("active-users: {err}");
            ExitCode::FAILURE
        }
    }
}

/// 128 random bits as hex, from the standard library's per-process random
/// hash keys (no extra dependency for a demo).
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}

async fn run() -> Result<(), String> {
    let mut upstream_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--upstream-only" => upstream_only = true,
            _ => return Err(format!("unknown argument {arg:?} (only --upstream-only)")),
        }
    }
    if upstream_only {
        return run_upstream().await;
    }
    let environment = Environment::detect().map_err(|e| e.to_string())?;
    let mut config =
        Config::load(environment).map_err(|e| format!("invalid configuration:\n{e}"))?;
    // Admin routes need a token in production and docker. Without one
    // configured, the demo makes one for this run and prints it once, so
    // that its dashboard works out of the box and stays closed to others.
    let generated = matches!(environment, Environment::Production | Environment::Docker)
        && config.admin.token.is_none();
    if generated {
        config.admin.token = Some(random_token());
    }
    let options = Options::from_env(|name| std::env::var(name).ok())?;
    let demo = Demo::start(environment, with_demo_classes(config), &options)
        .await
        .map_err(|e| format!("invalid configuration:\n{e}"))?;

    let (addr, default_addr) = match std::env::var("HERDSMAN_ADDR") {
        Ok(addr) => (addr, false),
        Err(_) => (default_addr(environment).to_owned(), true),
    };
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let config = demo.coordinator.config();
    tracing::info!(
        environment = environment.as_str(),
        interval = ?config.registry.class.interval,
        redis = config.redis.redacted_url().as_deref().unwrap_or("off"),
        "active-users demo listening on http://{local}/"
    );
    let token = config.admin.token.as_deref().filter(|_| generated);
    announce(environment, local, default_addr, token);
    let server = Server::from_settings(&config.server)
        .map_err(|e| format!("invalid configuration:\n{e}"))?;
    let (shutdown, live, grace) = (
        demo.shutdown.clone(),
        demo.live.clone(),
        config.server.shutdown_timeout,
    );
    server
        .serve(listener, demo.router())
        .with_graceful_shutdown(async move {
            signal().await;
            tracing::info!(
                event_streams = live.streams().get(),
                ?grace,
                "shutting down: event streams end now, requests in progress have the grace period"
            );
            shutdown.trigger();
        })
        .await
        .map_err(|e| e.to_string())
}

/// Tells the operator, straight on stderr (whatever `RUST_LOG` says, and
/// never through the logs, where log shipping would carry a token): where
/// the demo listens, and the URL that opens the dashboard with the token
/// made for this run, if one was.
fn announce(environment: Environment, local: SocketAddr, default_addr: bool, token: Option<&str>) {
    eprintln!(
        "active-users: listening on http://{local}/ ({} profile{})",
        environment.as_str(),
        listen_note(local, default_addr)
    );
    if let Some(token) = token {
        eprintln!(
            "active-users: no admin token configured (HERDSMAN__ADMIN__TOKEN); \
             this run's opens the dashboard:\n\n    http://{}/_herdsman/#token={token}\n",
            browsable(local)
        );
    }
}

/// Where the demo listens unless `HERDSMAN_ADDR` says: loopback, but in
/// the docker profile every interface, since a container's loopback is
/// out of reach from the host's published port.
fn default_addr(environment: Environment) -> &'static str {
    match environment {
        Environment::Docker => "0.0.0.0:3000",
        _ => "127.0.0.1:3000",
    }
}

/// Says why the demo listens on every interface, when it does.
fn listen_note(local: SocketAddr, default_addr: bool) -> &'static str {
    match (local.ip().is_unspecified(), default_addr) {
        (true, true) => "; every interface, the docker profile's default: HERDSMAN_ADDR changes it",
        (true, false) => "; every interface",
        (false, _) => "",
    }
}

/// An address a browser on this host can open: loopback for a socket
/// bound to every interface (a container's published port, say).
fn browsable(local: SocketAddr) -> String {
    if local.ip().is_unspecified() {
        format!("localhost:{}", local.port())
    } else {
        local.to_string()
    }
}

/// `--upstream-only`: the simulated upstream alone, with `GET
/// /upstream/calls`, for replicas started with `DEMO_UPSTREAM_URL`.
async fn run_upstream() -> Result<(), String> {
    let options = Options::from_env(|name| std::env::var(name).ok())?;
    let upstream = Upstream::new(options.latency, options.fail_rate);
    if let Some(every) = options.churn {
        upstream.spawn_churn(every);
    }
    let addr = std::env::var("HERDSMAN_ADDR").unwrap_or_else(|_| "127.0.0.1:4000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        "active-users upstream listening on http://{local}/ (its calls: http://{local}/upstream/calls)"
    );
    axum::serve(listener, upstream.standalone_router())
        .with_graceful_shutdown(signal())
        .await
        .map_err(|e| e.to_string())
}
