//! The herdsman demo app.
//!
//! ```text
//! cargo run --release -p active-users
//! cargo run --release -p active-users -- --upstream-only   # the upstream alone, on :4000
//! ```
//!
//! See the crate docs (`src/lib.rs`) for the variables it reads.

use std::process::ExitCode;

use active_users::{with_demo_classes, Demo, Options, Upstream};
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

    let addr = std::env::var("HERDSMAN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        environment = environment.as_str(),
        interval = ?demo.coordinator.config().registry.class.interval,
        redis = demo.coordinator.config().redis.redacted_url().as_deref().unwrap_or("off"),
        "active-users demo listening on http://{local}/"
    );
    if generated {
        let token = demo
            .coordinator
            .config()
            .admin
            .token
            .as_deref()
            .unwrap_or_default();
        tracing::info!(
            "no admin token configured (HERDSMAN__ADMIN__TOKEN): this run's is {token}; \
             open the dashboard at http://{local}/#token={token}"
        );
    }
    let server = Server::from_settings(&demo.coordinator.config().server)
        .map_err(|e| format!("invalid configuration:\n{e}"))?;
    server
        .serve(listener, demo.router())
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| e.to_string())
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
        .with_graceful_shutdown(shutdown())
        .await
        .map_err(|e| e.to_string())
}

/// Ctrl-C, or SIGTERM (what `docker stop` and Kubernetes send; as the
/// container's first process, the demo would otherwise ignore it).
async fn shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
