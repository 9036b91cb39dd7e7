//! Behind a reverse proxy, end to end: a real `Server` on `127.0.0.1:0`
//! with a Coordinator's `Live` streams and an admin route, spoken to over
//! TCP. A forwarding header is believed only from a trusted proxy: from
//! anyone else it is ignored, for the budgets per address and for the
//! admin routes' loopback rule alike; and beside the budgets, the process
//! holds at most `server.max_event_streams` streams.
//!
//! Real sockets, so real time: every wait is bounded.

mod support;

use std::{convert::Infallible, future::IntoFuture, net::SocketAddr, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware,
    response::Response,
    routing::get,
    Router,
};
use herdsman::{
    config::{ClassConfig, Config, Environment},
    http::ForwardedHeader,
    Coordinated, Coordinator,
};
use herdsman_axum::{data_request, require_admin, AdminAccess, LastEventId, Live, Server};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};
use tower::{service_fn, util::BoxCloneSyncService, Layer};

const BOUND: Duration = Duration::from_secs(10);

/// A served app: `GET /sse/users` streams `/users` (one public class) over
/// the registry; `GET /admin` is behind the development rule (loopback
/// clients only).
struct App {
    addr: SocketAddr,
    coordinator: Coordinator,
    live: Live,
}

impl App {
    async fn start(tweak: impl FnOnce(&mut Config)) -> App {
        let mut config = Config::profile(Environment::Test);
        config.registry.class.linger = Duration::from_secs(60);
        config.classes.insert(
            "users".to_owned(),
            ClassConfig {
                paths: vec!["/users".to_owned()],
                public: true,
                ..ClassConfig::default()
            },
        );
        tweak(&mut config);
        let coordinator = Coordinator::builder()
            .environment(Environment::Test)
            .config(config)
            .build()
            .expect("a valid configuration");
        let origin = BoxCloneSyncService::new(service_fn(|_: Request| async {
            Ok::<_, Infallible>(Response::new(Body::from("[]")))
        }));
        let stack: Coordinated<_> = coordinator.layer().layer(origin);
        let settings = &coordinator.config().server;
        let live = Live::new(move |req| stack.subscribe(req))
            .with_stats(
                coordinator.stats().clone(),
                coordinator.config().path_classes(),
            )
            .with_max_streams(settings.max_event_streams);
        let access = AdminAccess::for_environment(Environment::Development, None);
        let router = Router::new()
            .route("/sse/users", get(stream))
            .with_state(live.clone())
            .route(
                "/admin",
                get(|| async { "admin" })
                    .route_layer(middleware::from_fn_with_state(access, require_admin)),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Server::from_settings(settings).unwrap();
        tokio::spawn(server.serve(listener, router).into_future());
        App {
            addr,
            coordinator,
            live,
        }
    }

    /// Opens `GET path` with `headers` (`name: value` lines) and reads the
    /// response head: its status and the open connection.
    async fn open(&self, path: &str, headers: &[&str]) -> (u16, String, TcpStream) {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: app\r\n");
        for header in headers {
            request.push_str(header);
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0; 1];
        timeout(BOUND, async {
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
                head.push(byte[0]);
            }
        })
        .await
        .expect("a response head");
        let head = String::from_utf8(head).unwrap();
        let status = head[9..12].parse().unwrap();
        (status, head, stream)
    }

    /// Opens a stream of the users from the client `forwarded_for` names
    /// (no header for `None`); its status, and its connection.
    async fn stream(&self, forwarded_for: Option<&str>) -> (u16, String, TcpStream) {
        let header = forwarded_for.map(|client| format!("x-forwarded-for: {client}"));
        let headers: Vec<&str> = header.iter().map(String::as_str).collect();
        self.open("/sse/users", &headers).await
    }

    async fn admin(&self, headers: &[&str]) -> u16 {
        self.open("/admin", headers).await.0
    }

    fn rejections(&self, reason: &str) -> u64 {
        self.coordinator.snapshot().endpoints["users"].rejections[reason]
    }
}

async fn stream(State(live): State<Live>, last: LastEventId, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    live.sse(data_request(&parts, "/users"), last)
}

/// Two streams per client address; any number per process.
fn two_per_address(config: &mut Config) {
    config.registry.class.max_subscribers_per_address = 2;
    config.registry.class.max_subscribers_per_caller = 2;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_forwarding_header_from_an_untrusted_peer_is_ignored() {
    let app = App::start(|c| {
        two_per_address(c);
        c.server.trusted_proxies = vec!["10.0.0.0/8".to_owned()];
    })
    .await;
    // Each claims another client; all come from 127.0.0.1, and count so.
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let (status, head, stream) = app.stream(Some(client)).await;
        statuses.push(status);
        if status == 429 {
            assert!(head.contains("retry-after: 5\r\n"), "{head}");
        }
        open.push(stream);
    }
    assert_eq!(statuses, [200, 200, 429]);
    assert_eq!(app.rejections("subscribers_per_address"), 1);

    // A loopback peer that says it forwards someone is a proxy the server
    // does not know: the admin route refuses it.
    assert_eq!(app.admin(&[]).await, 200);
    assert_eq!(app.admin(&["x-forwarded-for: 127.0.0.1"]).await, 403);
    assert_eq!(app.admin(&["forwarded: for=127.0.0.1"]).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_header_names_the_client_for_budgets_and_the_admin_rule() {
    let app = App::start(|c| {
        two_per_address(c);
        c.server.trusted_proxies = vec!["127.0.0.1".to_owned()];
    })
    .await;
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    // A client's own claims, left of what the proxy appended, count for
    // nothing.
    for client in [
        "203.0.113.1",
        "1.1.1.1, 203.0.113.1",
        "2.2.2.2, 203.0.113.1",
        "203.0.113.2",
    ] {
        let (status, _, stream) = app.stream(Some(client)).await;
        statuses.push(status);
        open.push(stream);
    }
    assert_eq!(statuses, [200, 200, 429, 200], "one budget per client");
    assert_eq!(app.live.streams().get(), 3);

    // The proxy on this host forwards a remote client: not loopback.
    assert_eq!(app.admin(&["x-forwarded-for: 203.0.113.9"]).await, 403);
    // A browser on this host, through the proxy, or straight.
    assert_eq!(app.admin(&["x-forwarded-for: 127.0.0.1"]).await, 200);
    assert_eq!(app.admin(&[]).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxys_forwarded_header_is_read_when_configured() {
    let app = App::start(|c| {
        two_per_address(c);
        c.server.trusted_proxies = vec!["127.0.0.1".to_owned()];
        c.server.forwarded_header = ForwardedHeader::Forwarded;
    })
    .await;
    let forwarded = [
        "forwarded: for=203.0.113.1",
        "forwarded: for=\"[2001:db8::1]:80\"",
    ];
    let mut open = Vec::new();
    for header in forwarded.iter().chain(&forwarded) {
        let (status, _, stream) = app.open("/sse/users", &[header]).await;
        assert_eq!(status, 200, "{header}");
        open.push(stream);
    }
    // X-Forwarded-For is not the header this proxy writes: ignored, so the
    // stream counts for the proxy's own address.
    for status in [200, 200, 429] {
        let (got, _, stream) = app.stream(Some("203.0.113.7")).await;
        assert_eq!(got, status);
        open.push(stream);
    }
    assert_eq!(app.admin(&["forwarded: for=203.0.113.9"]).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_process_cap_a_new_stream_is_answered_429_until_one_closes() {
    let app = App::start(|c| {
        c.server.trusted_proxies = vec!["127.0.0.1".to_owned()];
        c.server.max_event_streams = 3;
    })
    .await;
    let mut open = Vec::new();
    for client in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let (status, _, stream) = app.stream(Some(client)).await;
        assert_eq!(status, 200);
        open.push(stream);
    }
    // Another client, well within its own budget: the process is full.
    let (status, head, _) = app.stream(Some("203.0.113.4")).await;
    assert_eq!(status, 429);
    assert!(head.contains("retry-after: 5\r\n"), "{head}");
    assert_eq!(app.rejections("event_streams"), 1);
    assert_eq!(app.live.streams().get(), 3);

    // A stream that closes gives its place back (once the server sees the
    // connection gone).
    drop(open.pop());
    timeout(BOUND, async {
        loop {
            let (status, _, stream) = app.stream(Some("203.0.113.4")).await;
            if status == 200 {
                break stream;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a place once a stream closed");
}
