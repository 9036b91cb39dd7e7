//! The demo under soak: a child process the soak starts (and kills when it
//! is done), or one already running.

use std::{
    fs::File,
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
};

/// The environment the child demo runs in: production (every layer on,
/// the limit's queue, a 10 s poll interval, a 30 s linger, an admin token),
/// with stale-if-error cut from 300 s to 60 s so that a cache sweep could
/// empty the cache within the drain wait.
const CHILD_ENV: [(&str, &str); 3] = [
    ("HERDSMAN_ENV", "production"),
    ("HERDSMAN__CACHE__STALE_IF_ERROR", "60s"),
    ("RUST_LOG", "warn"),
];

/// The demo: where it listens, its admin token and its process.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) url: String,
    pub(crate) token: Option<String>,
    pub(crate) pid: Option<u32>,
    child: Option<Child>,
}

impl Target {
    /// A demo already running at `url`.
    pub(crate) fn attach(url: &str, token: Option<String>, pid: Option<u32>) -> Target {
        Target {
            url: url.trim_end_matches('/').to_owned(),
            token,
            pid,
            child: None,
        }
    }

    /// Starts `bin` on a free port of 127.0.0.1, its log in `log`.
    pub(crate) fn start(bin: &Path, log: &Path, latency_ms: u64) -> Result<Target, String> {
        // The port is free when asked; the demo binds it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let token = random_token();
        let log = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err_log = log
            .try_clone()
            .map_err(|e| format!("cannot share the log file: {e}"))?;
        let child = Command::new(bin)
            .envs(CHILD_ENV)
            .env("HERDSMAN_ADDR", format!("127.0.0.1:{port}"))
            .env("HERDSMAN__ADMIN__TOKEN", &token)
            .env("DEMO_UPSTREAM_LATENCY_MS", latency_ms.to_string())
            .env("DEMO_UPSTREAM_FAIL_RATE", "0")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {} ({e}); build it with `cargo build --release -p active-users`",
                    bin.display()
                )
            })?;
        Ok(Target {
            url: format!("http://127.0.0.1:{port}"),
            token: Some(token),
            pid: Some(child.id()),
            child: Some(child),
        })
    }

    /// Whether the demo still runs (always, for one the soak did not start).
    pub(crate) fn alive(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmRSS` of `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let kb: u64 = line
            .strip_prefix("VmRSS:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    })
}

/// 128 bits from the standard library's per-process random hash keys, as
/// hex: an admin token for one run.
fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}
