//! The demo binary's graceful shutdown, end to end: started on
//! `127.0.0.1:0` with a slow upstream, given SIGTERM (or SIGINT) while
//! event streams are open and polls wait on the upstream, it stops
//! accepting, ends every stream with a last `shutdown` event, answers
//! every poll, and exits 0.
//!
//! A real process and real time: every wait is bounded, and each step
//! waits for what it needs (the address on stderr, each stream's first
//! event, the server's count of subscribers), never for a fixed time.

use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    task::JoinHandle,
    time::timeout,
};

/// The simulated upstream's latency: the polls below wait this long for
/// their first value, so they are in flight when the signal comes.
const LATENCY_MS: u64 = 5000;

/// A bound for anything that should take well under it.
const BOUND: Duration = Duration::from_secs(30);

/// The demo binary, running until dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
    stderr: JoinHandle<String>,
}

impl Demo {
    /// Starts the demo in the development profile (admin routes open to
    /// loopback) with room for 400 subscriptions from one address and a
    /// grace period well over the upstream's latency; returns once it
    /// says on stderr where it listens.
    async fn start() -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_active-users"))
            .env("HERDSMAN_ENV", "development")
            .env("HERDSMAN_ADDR", "127.0.0.1:0")
            .env("DEMO_UPSTREAM_LATENCY_MS", LATENCY_MS.to_string())
            .env("HERDSMAN__REGISTRY__MAX_SUBSCRIBERS_PER_ADDRESS", "1000")
            .env("HERDSMAN__REGISTRY__MAX_SUBSCRIBERS_PER_CALLER", "1000")
            .env("HERDSMAN__SERVER__SHUTDOWN_TIMEOUT", "20s")
            .env("RUST_LOG", "warn")
            .env_remove("HERDSMAN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the demo binary starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = timeout(BOUND, async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix("active-users: listening on http://") {
                    let addr = rest.split('/').next().unwrap();
                    return addr.parse::<SocketAddr>().unwrap();
                }
            }
            panic!("the demo ended without saying where it listens");
        })
        .await
        .expect("the demo says where it listens");
        // Keep reading, so that the demo never blocks on a full pipe.
        let stderr = tokio::spawn(async move {
            let mut rest = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                rest.push_str(&line);
                rest.push('\n');
            }
            rest
        });
        Demo {
            child,
            addr,
            stderr,
        }
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-s", name, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    async fn exit(mut self) -> (ExitStatus, String) {
        let status = timeout(BOUND, self.child.wait())
            .await
            .expect("the demo exits within the grace period")
            .unwrap();
        let stderr = timeout(BOUND, self.stderr).await.unwrap().unwrap();
        (status, stderr)
    }

    /// The registry's subscribers now, from the admin stats.
    async fn subscribers(&self) -> u64 {
        let response = get(self.addr, "/_herdsman/stats").await;
        let body = &response[response.find("\r\n\r\n").expect("a head") + 4..];
        let stats: serde_json::Value = serde_json::from_str(body).expect("stats JSON");
        stats["sizes"]["registry_subscribers"]
            .as_u64()
            .expect("a count")
    }
}

/// A whole response to `GET path` on a connection of its own.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

/// An event stream of the active users, once its first event is in.
async fn open_stream(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        "GET /sse/active-users HTTP/1.1\r\nhost: demo\r\naccept: text/event-stream\r\n\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0; 4096];
    while !contains(&seen, b"data: ") || !contains(&seen, b"\n\n") {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the stream ended before its first event");
        seen.extend_from_slice(&chunk[..n]);
    }
    (stream, seen)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Reads a stream to its end: what it sent since its first event.
async fn rest(mut stream: TcpStream) -> String {
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    String::from_utf8(rest).unwrap()
}

/// Waits (bounded) until `check` holds, asking again every 50 ms.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    timeout(BOUND, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not within {BOUND:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_200_streams_with_a_last_event_answers_200_slow_polls_and_exits_0() {
    let demo = Demo::start().await;
    let addr = demo.addr;

    let opening: Vec<_> = (0..200).map(|_| tokio::spawn(open_stream(addr))).collect();
    let mut streams = Vec::new();
    for stream in opening {
        let (stream, first) = timeout(BOUND, stream).await.unwrap().unwrap();
        assert!(
            contains(&first, b"x-accel-buffering: no"),
            "{}",
            String::from_utf8_lossy(&first)
        );
        streams.push(stream);
    }
    // 200 polls of a board no one has polled: each waits for the
    // upstream's first answer, LATENCY_MS away.
    let polls: Vec<_> = (0..200)
        .map(|_| tokio::spawn(get(addr, "/api/boards/slow/events")))
        .collect();
    eventually("400 subscribers", || async {
        demo.subscribers().await >= 400
    })
    .await;

    demo.signal("TERM");
    assert!(
        polls.iter().all(|poll| !poll.is_finished()),
        "the polls are in flight when the signal comes"
    );
    // It stops accepting at once...
    eventually("new connections refused", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    // ...ends each stream with the last event...
    let ending: Vec<_> = streams.into_iter().map(|s| tokio::spawn(rest(s))).collect();
    for stream in ending {
        let rest = timeout(BOUND, stream).await.unwrap().unwrap();
        assert!(
            rest.contains("event: shutdown\n") && rest.contains("retry: 1000\n"),
            "{rest:?}"
        );
        assert!(rest.ends_with("0\r\n\r\n"), "the stream ended: {rest:?}");
    }
    // ...answers each poll...
    for poll in polls {
        let response = timeout(BOUND, poll).await.unwrap().unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("[]"), "{response}");
    }
    // ...and exits 0.
    let (status, stderr) = demo.exit().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_with_an_open_stream_exits_0_at_once() {
    let demo = Demo::start().await;
    let (stream, _) = timeout(BOUND, open_stream(demo.addr)).await.unwrap();
    let signalled = std::time::Instant::now();
    demo.signal("INT");
    let rest = timeout(BOUND, rest(stream)).await.unwrap();
    assert!(rest.contains("event: shutdown\n"), "{rest:?}");
    let (status, stderr) = demo.exit().await;
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Nothing was left to wait for: not the 20 s grace period.
    let took = signalled.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
}
