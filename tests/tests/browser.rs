//! The live dashboard in a real browser: headless Chromium, driven over
//! WebDriver by chromedriver, against the demo app served in-process.
//!
//! They need Debian's `chromium` and `chromium-driver`, so they are ignored
//! by default (`cargo test --workspace` passes without a browser); `.ci/run`
//! installs both and runs them:
//!
//! ```text
//! cargo test -p herdsman-tests --test browser -- --ignored --test-threads=1
//! ```
//!
//! `CHROMEDRIVER` and `CHROMIUM` name the binaries (default
//! `/usr/bin/chromedriver` and `/usr/bin/chromium`).
//!
//! The WebDriver client below is the dozen commands these tests send, over
//! the workspace's hyper client: fantoccini needs the `webdriver` crate,
//! whose MPL-2.0 license deny.toml's permissive-only list does not admit.
//!
//! Browser state is read by polling it every 100 ms up to a deadline
//! ([`wait_for`]); no test sleeps for a result.

use std::{
    env,
    future::Future,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use active_users::{with_demo_classes, Demo, Options};
use base64::Engine;
use bytes::Bytes;
use herdsman::{
    config::{Config, Environment},
    event::Invalidation,
    stats::{AlertRules, Stats},
};
use herdsman_axum::Admin;
use herdsman_tests::{bounded_by, client, replies, request, send_all, HttpClient, Server};
use http::{header, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

/// How long one browser test may run before it fails instead of hanging.
const TEST_DEADLINE: Duration = Duration::from_secs(90);

/// How long [`wait_for`] waits for a browser state.
const WAIT_DEADLINE: Duration = Duration::from_secs(10);

/// How often [`wait_for`] looks.
const WAIT_EVERY: Duration = Duration::from_millis(100);

/// The registry's poll interval, and so the page's polling interval
/// (`X-Poll-Interval`): short, so that polling is seen within a deadline.
const INTERVAL: Duration = Duration::from_millis(250);

/// EventSources one dashboard opens: active users and the board's events.
const STREAMS_PER_PAGE: usize = 2;

/// The demo upstream's users before a test changes them.
const FIRST_USERS: [&str; 4] = ["ann", "bob", "chen", "dara"];

/// The size of docs/dashboard.png.
const SCREENSHOT: (u32, u32) = (1280, 900);

// ------------------------------------------------------------------ the app

struct App {
    demo: Demo,
    server: Server,
}

impl App {
    async fn start() -> App {
        App::start_in(Environment::Development, None).await
    }

    /// The demo in `environment`, with `token` as its admin token.
    async fn start_in(environment: Environment, token: Option<&str>) -> App {
        let mut config = Config::profile(environment);
        config.admin.token = token.map(str::to_owned);
        // A production test polls fast too.
        config.registry.allow_fast_polling = true;
        config.registry.class.interval = INTERVAL;
        config.registry.floor = Duration::from_millis(10);
        // Pollers subscribe per request: the loop must outlive the gap.
        config.registry.class.linger = Duration::from_secs(5);
        let options = Options {
            latency: Duration::from_millis(20),
            fail_rate: 0.0,
            churn: None,
            upstream_url: None,
        };
        let demo = Demo::build(environment, with_demo_classes(config), &options)
            .expect("the demo's configuration is valid");
        let server = Server::start_with_connect_info(demo.router()).await;
        App { demo, server }
    }

    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    /// SSE streams open on the server, over all callers.
    fn open_streams(&self) -> usize {
        self.demo.live.streams().get()
    }

    /// Registry subscribers of an endpoint class now.
    fn subscribers(&self, class: &str) -> i64 {
        self.demo
            .coordinator
            .stats()
            .snapshot()
            .endpoints
            .get(class)
            .map_or(0, |e| e.subscribers)
    }

    /// Makes every upstream call fail (`fail`) or none, and has the active
    /// users' poll loop poll at once.
    fn set_outage(&self, fail: bool) {
        self.demo
            .upstream
            .set_fail_rate(if fail { 1.0 } else { 0.0 });
        self.demo
            .coordinator
            .invalidate(&Invalidation::Path("/api/active-users".into()));
    }

    /// Changes the active users and pushes the change, as a write would.
    fn set_users(&self, users: &[&str]) {
        self.demo.upstream.set_users(users.iter().copied());
        self.demo
            .coordinator
            .invalidate(&Invalidation::Path("/api/active-users".into()));
    }
}

// --------------------------------------------------------------- WebDriver

/// chromedriver as a child process, on a free port; killed on drop.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let path = env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {path} (set CHROMEDRIVER): {err}"));
        let driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let http = client();
        let status = format!("{}/status", driver.url);
        wait_for("chromedriver is ready", || {
            let (http, status) = (&http, &status);
            async move {
                let reply = send(http, Method::GET, status, None).await.ok()?;
                (reply.1["value"]["ready"] == true).then_some(())
            }
        })
        .await;
        driver
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One headless Chromium: a WebDriver session. Ended on drop, which closes
/// the browser, before chromedriver is killed.
struct Browser {
    http: HttpClient,
    session: String,
    /// Dropped after the session ends.
    _driver: ChromeDriver,
}

impl Browser {
    async fn start() -> Browser {
        let driver = ChromeDriver::start().await;
        let chromium = env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let (width, height) = SCREENSHOT;
        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--window-size={width},{height}"),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
        ];
        // Chromium's sandbox refuses to run as root (CI containers).
        if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            args.push("--no-sandbox".to_owned());
        }
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": chromium, "args": args },
                }
            }
        });
        let http = client();
        let url = format!("{}/session", driver.url);
        let value = command(&http, Method::POST, &url, Some(capabilities)).await;
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {value}"));
        Browser {
            http,
            session: format!("{url}/{id}"),
            _driver: driver,
        }
    }

    async fn command(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        command(&self.http, method, &url, body).await
    }

    /// The tab the session is on.
    async fn current_tab(&self) -> String {
        let handle = self.command(Method::GET, "/window", None).await;
        handle.as_str().expect("a window handle").to_owned()
    }

    /// Opens `url` in the current tab.
    async fn goto(&self, url: &str) {
        self.command(Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// Opens a new tab, switches to it and opens `url` there.
    async fn open_tab(&self, url: &str) -> String {
        let tab = self
            .command(Method::POST, "/window/new", Some(json!({ "type": "tab" })))
            .await;
        let handle = tab["handle"].as_str().expect("a window handle").to_owned();
        self.switch_to(&handle).await;
        self.goto(url).await;
        handle
    }

    /// `n` tabs of `url`: the session's first tab and `n - 1` new ones.
    async fn tabs(&self, url: &str, n: usize) -> Vec<String> {
        let first = self.current_tab().await;
        self.goto(url).await;
        let mut tabs = vec![first];
        for _ in 1..n {
            tabs.push(self.open_tab(url).await);
        }
        tabs
    }

    async fn switch_to(&self, tab: &str) {
        self.command(Method::POST, "/window", Some(json!({ "handle": tab })))
            .await;
    }

    /// Closes `tab` as a user would; the session moves to `next`.
    async fn close_tab(&self, tab: &str, next: &str) {
        self.switch_to(tab).await;
        self.command(Method::DELETE, "/window", None).await;
        self.switch_to(next).await;
    }

    /// Runs `script` (a function body) in the current tab.
    async fn execute(&self, script: &str) -> Value {
        self.command(
            Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    /// What `tab` shows.
    async fn page(&self, tab: &str) -> Page {
        self.switch_to(tab).await;
        Page(self.execute(PAGE_SCRIPT).await)
    }

    /// What every tab of `tabs` shows, in order.
    async fn pages(&self, tabs: &[String]) -> Vec<Page> {
        let mut pages = Vec::with_capacity(tabs.len());
        for tab in tabs {
            pages.push(self.page(tab).await);
        }
        pages
    }

    /// Sizes the window so that the page's viewport is `width × height`
    /// (headless Chromium's window is taller than its viewport).
    async fn set_viewport(&self, (width, height): (u32, u32)) {
        let frame = self
            .execute("return [outerWidth - innerWidth, outerHeight - innerHeight];")
            .await;
        let extra = |i: usize| frame[i].as_u64().expect("a size in pixels");
        let rect = json!({
            "width": u64::from(width) + extra(0),
            "height": u64::from(height) + extra(1),
        });
        self.command(Method::POST, "/window/rect", Some(rect)).await;
    }

    /// A PNG of the current tab's viewport.
    async fn screenshot(&self) -> Vec<u8> {
        let png = self.command(Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 PNG"))
            .expect("valid base64")
    }
}

impl Drop for Browser {
    /// Ends the session (chromedriver closes Chromium) with a blocking
    /// request, as drop cannot await; chromedriver is killed after.
    fn drop(&mut self) {
        let Some(rest) = self.session.strip_prefix("http://") else {
            return;
        };
        let Some((host, path)) = rest.split_once('/') else {
            return;
        };
        if let Ok(mut stream) = TcpStream::connect(host) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                stream,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            // chromedriver keeps the connection open: read one response.
            let mut reply = Vec::new();
            let mut chunk = [0; 4096];
            while let Ok(n @ 1..) = stream.read(&mut chunk) {
                reply.extend_from_slice(&chunk[..n]);
                if response_complete(&reply) {
                    break;
                }
            }
        }
    }
}

/// Whether `reply` holds a whole HTTP/1.1 response with a `Content-Length`.
fn response_complete(reply: &[u8]) -> bool {
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&reply[..end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    reply.len() >= end + 4 + length
}

/// Reads the dashboard's state: the globals it exposes for tests and what
/// it renders (crates/herdsman-axum/assets/README.md lists the hooks).
const PAGE_SCRIPT: &str = r##"
const d = window.herdsmanDashboard || {};
const text = (id) => { const e = document.getElementById(id); return e ? e.textContent : null; };
return {
  role: d.role || null,
  transport: d.transport || null,
  statsUpdates: d.statsUpdates || 0,
  election: d.election || null,
  roleText: text("role"),
  transportText: text("transport"),
  users: Array.from(document.querySelectorAll("#active-users-list li"), (li) => li.textContent),
  count: text("active-users-count"),
  cards: Array.from(document.querySelectorAll("#board-events li .card"), (c) => c.textContent),
  endpoints: Array.from(document.querySelectorAll("#stats [data-endpoint]"), (e) => e.dataset.endpoint),
  usersStale: (document.getElementById("users-panel") || { dataset: {} }).dataset.stale || null,
  usersBadge: (document.querySelector('#users-panel [data-field="stale"]') || {}).textContent || null,
  usersError: (document.querySelector('#users-panel [data-field="upstream-error"]') || {}).textContent || null,
  transportStale: (document.getElementById("transport") || { dataset: {} }).dataset.stale || null,
  staleFlags: d.stale || {},
  statsError: d.statsError || null,
  alerts: Array.from(document.querySelectorAll("#alerts li.alert"), (li) => ({
    rule: li.dataset.rule,
    state: li.dataset.state,
    value: (li.querySelector('[data-field="alert-value"]') || {}).textContent || null,
  })),
  statsMessage: (() => { const e = document.getElementById("stats-message"); return e && !e.hidden ? e.textContent : null; })(),
};
"##;

/// One tab's state, as [`PAGE_SCRIPT`] read it.
#[derive(Debug)]
struct Page(Value);

impl Page {
    fn role(&self) -> &str {
        self.0["role"].as_str().unwrap_or("")
    }

    fn election(&self) -> &str {
        self.0["election"].as_str().unwrap_or("")
    }

    fn is_leader(&self) -> bool {
        self.role() == "leader" && self.0["roleText"] == "leader"
    }

    /// The transport, when the global and `#transport` agree.
    fn transport(&self) -> Option<&str> {
        let transport = self.0["transport"].as_str()?;
        (self.0["transportText"] == transport).then_some(transport)
    }

    /// The active users listed, when the count agrees with the list.
    fn users(&self) -> Option<Vec<&str>> {
        let users: Vec<&str> = self.0["users"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let count = self.0["count"].as_str()?.parse::<usize>().ok()?;
        (count == users.len()).then_some(users)
    }

    fn shows_users(&self, expected: &[&str]) -> bool {
        self.users().is_some_and(|users| users == expected)
    }

    fn cards(&self) -> usize {
        self.0["cards"].as_array().map_or(0, Vec::len)
    }

    fn stats_updates(&self) -> u64 {
        self.0["statsUpdates"].as_u64().unwrap_or(0)
    }

    fn endpoints(&self) -> usize {
        self.0["endpoints"].as_array().map_or(0, Vec::len)
    }

    /// Whether the active users' panel shows its value as stale: the
    /// panel, its badge (`stale · <age>`), the global and the transport
    /// badge (amber) agree.
    fn users_stale(&self) -> bool {
        self.0["usersStale"] == "true"
            && self.0["usersBadge"]
                .as_str()
                .is_some_and(|b| b.starts_with("stale · "))
            && self.0["staleFlags"]["active-users"] == true
            && self.0["transportStale"] == "true"
    }

    /// Whether nothing on the page is marked stale.
    fn nothing_stale(&self) -> bool {
        self.0["usersStale"] != "true"
            && self.0["usersBadge"].is_null()
            && self.0["transportStale"] != "true"
    }

    fn users_error(&self) -> &str {
        self.0["usersError"].as_str().unwrap_or("")
    }

    /// The alerts listed: rule, state (`firing`, `resolved`) and value.
    fn alerts(&self) -> Vec<(&str, &str, &str)> {
        fn field<'a>(a: &'a Value, name: &str) -> &'a str {
            a[name].as_str().unwrap_or("")
        }
        self.0["alerts"].as_array().map_or_else(Vec::new, |alerts| {
            alerts
                .iter()
                .map(|a| (field(a, "rule"), field(a, "state"), field(a, "value")))
                .collect()
        })
    }

    /// Why the stats did not come (`unauthorized`, ...), and the message
    /// the page shows for it.
    fn stats_error(&self) -> Option<(&str, &str)> {
        Some((
            self.0["statsError"].as_str()?,
            self.0["statsMessage"].as_str()?,
        ))
    }
}

/// Sends one WebDriver command; a WebDriver error fails the test.
async fn command(http: &HttpClient, method: Method, url: &str, body: Option<Value>) -> Value {
    let what = format!("{method} {url}");
    match send(http, method, url, body).await {
        Ok((status, reply)) if status.is_success() => reply["value"].clone(),
        Ok((status, reply)) => panic!("{what}: {status}: {}", reply["value"]),
        Err(err) => panic!("{what}: {err}"),
    }
}

async fn send(
    http: &HttpClient,
    method: Method,
    url: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value), herdsman::BoxError> {
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = request(method, url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))?;
    let response = http.request(req).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, serde_json::from_slice(&bytes)?))
}

/// Polls `probe` every [`WAIT_EVERY`] until it gives a value, failing after
/// [`WAIT_DEADLINE`] with `what` it waited for.
async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT_DEADLINE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {WAIT_DEADLINE:?} waiting until {what}");
        }
        tokio::time::sleep(WAIT_EVERY).await;
    }
}

/// Waits until every tab of `tabs` passes `check`; returns their pages.
async fn wait_for_pages(
    browser: &Browser,
    tabs: &[String],
    what: &str,
    check: impl Fn(&[Page]) -> bool,
) -> Vec<Page> {
    let mut last = Vec::new();
    let waited = tokio::time::timeout(WAIT_DEADLINE, async {
        loop {
            last = browser.pages(tabs).await;
            if check(&last) {
                return;
            }
            tokio::time::sleep(WAIT_EVERY).await;
        }
    })
    .await;
    if waited.is_err() {
        panic!("timed out after {WAIT_DEADLINE:?} waiting until {what}; the tabs show {last:#?}");
    }
    last
}

/// Waits until the server holds `n` SSE streams.
async fn wait_for_streams(app: &App, n: usize) {
    wait_for(
        &format!("the server holds {n} SSE streams"),
        move || async move { (app.open_streams() == n).then_some(()) },
    )
    .await;
}

fn leaders(pages: &[Page]) -> usize {
    pages.iter().filter(|p| p.is_leader()).count()
}

// -------------------------------------------------------------------- tests

/// Where the dashboard elects with Web Locks, and where it is made to use
/// its BroadcastChannel heartbeat (the fallback for browsers without them).
const LOCKS: (&str, &str) = ("/", "locks");
const HEARTBEAT: (&str, &str) = ("/?election=heartbeat", "heartbeat");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn three_tabs_elect_one_leader_and_hold_one_tabs_worth_of_streams() {
    bounded_by(TEST_DEADLINE, three_tabs_share_one_leader(LOCKS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn three_tabs_elect_one_leader_by_heartbeat_and_hold_one_tabs_worth_of_streams() {
    bounded_by(TEST_DEADLINE, three_tabs_share_one_leader(HEARTBEAT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn closing_the_leader_tab_hands_the_streams_to_another_tab() {
    bounded_by(TEST_DEADLINE, closing_the_leader_hands_over(LOCKS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn closing_the_heartbeat_leader_tab_hands_the_streams_to_another_tab() {
    bounded_by(TEST_DEADLINE, closing_the_leader_hands_over(HEARTBEAT)).await;
}

/// Three tabs of `path` (electing by `election`) elect one leader, which
/// alone holds streams and feeds the others.
async fn three_tabs_share_one_leader((path, election): (&str, &str)) {
    let app = App::start().await;
    let browser = Browser::start().await;
    let tabs = browser.tabs(&app.url(path), 3).await;

    let pages = wait_for_pages(
        &browser,
        &tabs,
        "every tab shows the users over SSE",
        |pages| {
            pages
                .iter()
                .all(|p| p.shows_users(&FIRST_USERS) && p.transport() == Some("sse"))
        },
    )
    .await;
    assert!(pages.iter().all(|p| p.election() == election), "{pages:#?}");
    assert_eq!(leaders(&pages), 1, "exactly one leader: {pages:#?}");
    assert!(pages
        .iter()
        .all(|p| p.is_leader() || p.role() == "follower"));

    // The followers rendered through the leader: the server holds what one
    // page opens, one registry subscriber per stream.
    wait_for_streams(&app, STREAMS_PER_PAGE).await;
    assert_eq!(app.subscribers("active-users"), 1);
    assert_eq!(app.subscribers("board-events"), 1);

    // A change reaches every tab over the leader's one stream.
    app.set_users(&["eve"]);
    let pages = wait_for_pages(&browser, &tabs, "every tab shows the change", |pages| {
        pages.iter().all(|p| p.shows_users(&["eve"]))
    })
    .await;
    assert_eq!(leaders(&pages), 1, "still one leader: {pages:#?}");
    assert_eq!(app.open_streams(), STREAMS_PER_PAGE);
}

/// Closing the leader tab of three (electing by `election`) makes another
/// tab the leader, and the server still holds one tab's worth of streams.
async fn closing_the_leader_hands_over((path, election): (&str, &str)) {
    let app = App::start().await;
    let browser = Browser::start().await;
    let tabs = browser.tabs(&app.url(path), 3).await;
    let pages = wait_for_pages(&browser, &tabs, "one tab leads over SSE", |pages| {
        leaders(pages) == 1
            && pages
                .iter()
                .all(|p| p.shows_users(&FIRST_USERS) && p.transport() == Some("sse"))
    })
    .await;
    assert!(pages.iter().all(|p| p.election() == election), "{pages:#?}");
    wait_for_streams(&app, STREAMS_PER_PAGE).await;

    let leader = pages.iter().position(Page::is_leader).expect("a leader");
    let rest: Vec<String> = tabs
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != leader)
        .map(|(_, tab)| tab.clone())
        .collect();
    browser.close_tab(&tabs[leader], &rest[0]).await;

    wait_for_pages(&browser, &rest, "another tab leads over SSE", |pages| {
        leaders(pages) == 1 && pages.iter().all(|p| p.transport() == Some("sse"))
    })
    .await;
    // The closed tab's streams end; the new leader's replace them.
    wait_for_streams(&app, STREAMS_PER_PAGE).await;
    assert_eq!(app.subscribers("active-users"), 1);

    app.set_users(&["fay", "gus"]);
    let pages = wait_for_pages(&browser, &rest, "both tabs show the change", |pages| {
        pages.iter().all(|p| p.shows_users(&["fay", "gus"]))
    })
    .await;
    assert_eq!(leaders(&pages), 1, "still one leader: {pages:#?}");
    assert_eq!(app.open_streams(), STREAMS_PER_PAGE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn with_sse_switched_off_the_page_keeps_updating_by_polling() {
    bounded_by(TEST_DEADLINE, async {
        let app = App::start().await;
        let browser = Browser::start().await;
        let tabs = browser.tabs(&app.url("/"), 2).await;
        wait_for_pages(
            &browser,
            &tabs,
            "both tabs show the users over SSE",
            |pages| {
                pages
                    .iter()
                    .all(|p| p.shows_users(&FIRST_USERS) && p.transport() == Some("sse"))
            },
        )
        .await;

        app.demo.live.sse_toggle().set(false);
        wait_for_pages(&browser, &tabs, "both tabs say polling", |pages| {
            pages.iter().all(|p| p.transport() == Some("polling"))
        })
        .await;
        wait_for_streams(&app, 0).await;

        app.set_users(&["zoe", "yan"]);
        let pages = wait_for_pages(
            &browser,
            &tabs,
            "both tabs show the polled change",
            |pages| pages.iter().all(|p| p.shows_users(&["zoe", "yan"])),
        )
        .await;
        assert!(pages.iter().all(|p| p.transport() == Some("polling")));
        assert_eq!(app.open_streams(), 0, "the change came by polling");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn a_screenshot_of_the_dashboard_with_data_is_saved_as_docs_dashboard_png() {
    bounded_by(TEST_DEADLINE, async {
        let app = App::start().await;
        // Some cards on the board and a burst of identical reads, so that
        // the page has events and the stats show what coordination saved.
        let http = client();
        let cards = app.url("/api/boards/demo/cards");
        for card in ["Fix login", "Write release notes", "Review the breaker"] {
            let body = json!({ "card": card, "action": "added" }).to_string();
            let req = request(Method::POST, &cards)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("valid request");
            let response = http.request(req).await.expect("add a card");
            assert_eq!(response.status(), StatusCode::CREATED);
        }
        let users = app.url("/api/active-users");
        let reads = send_all(&http, (0..200).map(|_| herdsman_tests::get(&users)));
        assert!(replies(reads)
            .await
            .iter()
            .all(|r| r.status == StatusCode::OK));

        let browser = Browser::start().await;
        let tabs = browser.tabs(&app.url("/"), 1).await;
        browser.set_viewport(SCREENSHOT).await;
        // Three stats refreshes draw two points of each sparkline.
        wait_for_pages(
            &browser,
            &tabs,
            "the page shows users, cards and stats",
            |pages| {
                let page = &pages[0];
                page.shows_users(&FIRST_USERS)
                    && page.transport() == Some("sse")
                    && page.cards() == 3
                    && page.endpoints() >= 2
                    && page.stats_updates() >= 3
            },
        )
        .await;

        save_screenshot(&browser, "dashboard.png").await;
    })
    .await;
}

/// Saves a PNG of the current tab's viewport as `name`: always beside the
/// build; into the docs (a tracked file) only when asked, so that running
/// CI leaves the checkout clean.
async fn save_screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let size = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
    assert_eq!((size(16), size(20)), SCREENSHOT, "the IHDR size");
    let mut paths = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name)];
    if std::env::var_os("HERDSMAN_UPDATE_SCREENSHOT").is_some() {
        paths.push(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../docs")
                .join(name),
        );
    }
    for path in paths {
        std::fs::write(&path, &png).unwrap_or_else(|err| panic!("write {}: {err}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn during_an_outage_the_page_keeps_the_last_users_marked_stale() {
    bounded_by(TEST_DEADLINE, async {
        let app = App::start().await;
        let browser = Browser::start().await;
        let tabs = browser.tabs(&app.url("/"), 2).await;
        wait_for_pages(
            &browser,
            &tabs,
            "both tabs show the users over SSE",
            |pages| {
                pages.iter().all(|p| {
                    p.shows_users(&FIRST_USERS) && p.transport() == Some("sse") && p.nothing_stale()
                })
            },
        )
        .await;

        // Over SSE: the failed poll comes as an `upstream-error` event.
        app.set_outage(true);
        let pages = wait_for_pages(
            &browser,
            &tabs,
            "both tabs keep the users, marked stale",
            |pages| {
                pages
                    .iter()
                    .all(|p| p.shows_users(&FIRST_USERS) && p.users_stale())
            },
        )
        .await;
        for page in &pages {
            assert!(page.users_error().contains("upstream"), "{page:#?}");
            assert_eq!(page.transport(), Some("sse"), "the stream itself is fine");
        }
        browser.set_viewport(SCREENSHOT).await;
        save_screenshot(&browser, "dashboard-outage.png").await;

        // Polling: the answers are the last good value with
        // `X-Herdsman-Stale`, and the page keeps saying so.
        app.demo.live.sse_toggle().set(false);
        wait_for_pages(&browser, &tabs, "both tabs poll, still stale", |pages| {
            pages.iter().all(|p| {
                p.transport() == Some("polling") && p.shows_users(&FIRST_USERS) && p.users_stale()
            })
        })
        .await;

        // The upstream recovers: the next good value clears the marks.
        app.demo.live.sse_toggle().set(true);
        app.set_outage(false);
        app.set_users(&["ivy"]);
        wait_for_pages(&browser, &tabs, "both tabs show fresh users", |pages| {
            pages
                .iter()
                .all(|p| p.shows_users(&["ivy"]) && p.nothing_stale())
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn without_the_admin_token_the_dashboard_says_where_to_find_it() {
    bounded_by(TEST_DEADLINE, async {
        const TOKEN: &str = "a-long-enough-admin-token";
        let app = App::start_in(Environment::Production, Some(TOKEN)).await;
        let browser = Browser::start().await;
        let tabs = browser.tabs(&app.url("/_herdsman/"), 1).await;
        let pages = wait_for_pages(
            &browser,
            &tabs,
            "the page says the token is missing",
            |pages| pages[0].stats_error().is_some(),
        )
        .await;
        let (error, message) = pages[0].stats_error().expect("a message");
        assert_eq!(error, "unauthorized");
        assert!(message.contains("need the admin token"), "{message}");
        assert!(message.contains("403"), "{message}");
        assert!(message.contains("standard error"), "{message}");
        assert!(message.contains("/_herdsman/#token="), "{message}");
        assert_eq!(pages[0].stats_updates(), 0);

        // The URL the server prints opens it.
        browser
            .goto(&app.url(&format!("/_herdsman/#token={TOKEN}")))
            .await;
        wait_for_pages(&browser, &tabs, "the page shows the stats", |pages| {
            pages[0].stats_error().is_none()
                && pages[0].stats_updates() >= 3
                && pages[0].endpoints() >= 3
        })
        .await;
        browser.set_viewport(SCREENSHOT).await;
        save_screenshot(&browser, "dashboard-admin.png").await;

        // A wrong token is refused, and the page says that instead.
        browser
            .goto(&app.url("/_herdsman/#token=not-the-admin-token"))
            .await;
        let pages = wait_for_pages(
            &browser,
            &tabs,
            "the page says the token was refused",
            |pages| {
                pages[0]
                    .stats_error()
                    .is_some_and(|(_, m)| m.contains("was refused"))
            },
        )
        .await;
        assert_eq!(pages[0].stats_error().map(|e| e.0), Some("unauthorized"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver"]
async fn a_resolved_alert_shows_the_value_that_resolved_it() {
    bounded_by(TEST_DEADLINE, async {
        // herdsman's own dashboard over stats whose memory alert the test
        // drives: 1 MB is the threshold, the source is a number it sets.
        let stats = Stats::builder()
            .with_rules(AlertRules::none().with_memory_bytes(Some(1_000_000)))
            .build();
        let held = Arc::new(AtomicU64::new(2_500_000));
        let source = held.clone();
        stats.track_memory("cache", move || source.load(Ordering::SeqCst));
        let admin = Admin::builder(stats.clone(), Environment::Development, None).router();
        let server = Server::start_with_connect_info(admin).await;
        let browser = Browser::start().await;
        let tabs = browser.tabs(&server.url("/_herdsman/"), 1).await;

        stats.evaluate();
        wait_for_pages(
            &browser,
            &tabs,
            "the page shows the firing alert",
            |pages| pages[0].alerts() == [("memory", "firing", "2500000")],
        )
        .await;

        held.store(400_000, Ordering::SeqCst);
        stats.evaluate();
        wait_for_pages(
            &browser,
            &tabs,
            "the page shows it resolved at 400000",
            |pages| pages[0].alerts() == [("memory", "resolved", "400000")],
        )
        .await;
    })
    .await;
}
