//! A throwaway `redis-server` for tests and benchmarks (feature `dev`).
//!
//! Not for production: it starts the `redis-server` found on `PATH`, on a
//! free loopback port, in a directory of its own, with persistence off.

use std::{
    io,
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
    time::{sleep, Instant},
};

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A `redis-server` of its own: started on a free port in a temporary
/// directory (no `save`, no append-only file), killed on drop.
///
/// It can be killed and started again on the same port, to test what
/// happens while Redis is away.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use herdsman_redis::dev::RedisServer;
///
/// let mut server = RedisServer::start().await?;
/// let url = server.url(); // redis://127.0.0.1:<port>
/// server.kill().await?;
/// server.restart().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server and waits until it answers `PING`.
    pub async fn start() -> io::Result<Self> {
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("herdsman-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        // The port is free now; the server takes it a moment later.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut server = RedisServer {
            port,
            dir,
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (`SIGKILL`: no goodbye to its clients) and waits
    /// for it to exit.
    pub async fn kill(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts the server again on the same port (killing it first if it
    /// runs), empty, and waits until it answers `PING`.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill().await?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                io::Error::new(err.kind(), format!("cannot start redis-server: {err}"))
            })?;
        self.child = Some(child);
        self.wait_for_pong().await
    }

    async fn wait_for_pong(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    return Err(io::Error::other(format!("redis-server exited: {status}")));
                }
            }
            if ping(self.port).await.is_ok() {
                return Ok(());
            }
            sleep(Duration::from_millis(20)).await;
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "redis-server did not answer PING",
        ))
    }
}

/// One `PING`, answered `+PONG`.
async fn ping(port: u16) -> io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"PING\r\n").await?;
    let mut reply = [0; 7];
    stream.read_exact(&mut reply).await?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(io::Error::other("not a PONG"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
