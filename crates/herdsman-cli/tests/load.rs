//! `herdsman load` at a small scale against the demo served on
//! 127.0.0.1:0 in this process: each scenario runs for a second or two of
//! real time (a load is real traffic), and its report is checked against
//! what the demo's upstream counted.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    path::PathBuf,
    process::{Output, Stdio},
    time::Duration,
};

use active_users::{with_demo_classes, Demo, Endpoint, Options};
use herdsman::config::{Config, Environment};

/// The demo in the test profile (admin routes open to loopback), polling
/// every 500 ms, its upstream answering in 5 ms, without churn.
async fn demo() -> (Demo, SocketAddr) {
    let mut config = Config::profile(Environment::Test);
    config.registry.class.interval = Duration::from_millis(500);
    config.registry.class.linger = Duration::from_secs(5);
    let options = Options {
        latency: Duration::from_millis(5),
        churn: None,
        ..Options::default()
    };
    let demo = Demo::build(Environment::Test, with_demo_classes(config), &options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = demo.router();
    tokio::spawn(async move { herdsman_axum::Server::new().serve(listener, router).await });
    (demo, addr)
}

/// `herdsman load ARGS`, killed (and the test failed) if it has not
/// finished within a minute.
async fn load(args: Vec<String>) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herdsman"))
        .arg("load")
        .args(&args)
        .env_remove("HERDSMAN_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("herdsman load {args:?} did not finish within a minute"))
        .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn text(out: &Output) -> (String, String) {
    let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    (s(&out.stdout), s(&out.stderr))
}

/// The number in the report's `| name | n |` line.
fn figure(report: &str, name: &str) -> u64 {
    let prefix = format!("| {name} | ");
    let line = report
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {name:?} line in\n{report}"));
    line.split(' ').next().unwrap().parse().unwrap()
}

fn out_dir(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The body of `GET path`, over a plain connection.
fn body(addr: SocketAddr, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn tabs_counts_client_requests_against_the_upstream_calls_they_caused() {
    let (demo, addr) = demo().await;
    let dir = out_dir("tabs");
    let out = load(args(&[
        "tabs",
        "--target",
        &format!("http://{addr}"),
        "--tabs",
        "5",
        "--hooks",
        "2",
        "--interval",
        "200ms",
        "--duration",
        "2s",
        "--out",
        dir.join("tabs.md").to_str().unwrap(),
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let report = std::fs::read_to_string(dir.join("tabs.md")).unwrap();
    // 10 hooks polling every 200 ms for 2 s: 10 polls each, fewer only
    // when a machine too busy delays a hook's timer.
    let requests = figure(&report, "client requests");
    assert!((80..=100).contains(&requests), "{report}");
    assert_eq!(figure(&report, "errors"), 0, "{report}");
    assert_eq!(
        figure(&report, "upstream calls"),
        demo.upstream.calls(Endpoint::ActiveUsers),
        "{report}"
    );
    assert!(
        report.contains("| server poll interval (`X-Poll-Interval`) | 500 ms |"),
        "{report}"
    );
    assert!(
        report.contains("- At most one upstream call per interval for the key: **met**"),
        "{report}"
    );
    for chart in ["tabs-latency.svg", "tabs-requests-upstream.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
        assert!(report.contains(&format!("]({chart})")), "{report}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_compares_the_coordinated_route_with_the_bare_one_in_rounds() {
    let (_demo, addr) = demo().await;
    assert_eq!(body(addr, "/bare/static"), body(addr, "/api/active-users"));
    let out = load(args(&[
        "http",
        "--target",
        &format!("http://{addr}"),
        "--connections",
        "4",
        "--duration",
        "1s",
        "--round",
        "250ms",
        "--compare",
        "/bare/static",
    ]))
    .await;
    let (report, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{report}{stderr}");
    assert!(
        report.contains("in 4 interleaved rounds of 250 ms"),
        "{report}"
    );
    assert!(
        report.contains("## `/api/active-users` against `/bare/static`"),
        "{report}"
    );
    for route in ["/api/active-users", "/bare/static"] {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("| `http://{addr}{route}` |")))
            .unwrap_or_else(|| panic!("no line for {route} in\n{report}"));
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells[2].parse::<u64>().unwrap() > 0, "{line}");
        assert_eq!(cells[3], "0", "errors: {line}");
    }
    assert!(
        report.contains("(Charts are written with --out, beside the report.)"),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_off_this_machine_is_refused_without_the_flag() {
    let out = load(args(&[
        "http",
        "--target",
        "http://192.0.2.1:80",
        "--duration",
        "1s",
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("192.0.2.1 is not a loopback address"),
        "{stderr}"
    );
    assert!(stderr.contains("--allow-remote"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_measures_each_changes_fan_out_to_every_stream() {
    let (demo, addr) = demo().await;
    let dir = out_dir("sse");
    let out = load(args(&[
        "sse",
        "--target",
        &format!("http://{addr}"),
        "--path",
        "/sse/boards/load/events",
        "--connections",
        "40",
        "--steps",
        "2",
        "--addresses",
        "3",
        "--duration",
        "2s",
        "--change",
        "POST",
        "/api/boards/load/cards",
        r#"{"card": "load"}"#,
        "--change-every",
        "1s",
        "--pid",
        &std::process::id().to_string(),
        "--out",
        dir.join("sse.md").to_str().unwrap(),
    ]))
    .await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let report = std::fs::read_to_string(dir.join("sse.md")).unwrap();
    assert_eq!(
        figure(&report, "streams that got their first event"),
        40,
        "{report}"
    );
    assert_eq!(figure(&report, "dropped while open"), 0, "{report}");
    assert_eq!(figure(&report, "open at the end"), 40, "{report}");
    // Two steps (20, then 40 streams) and one change while held, each
    // reaching every stream open; each change is one card written.
    for line in ["| 1 | 20 | 20 |", "| 2 | 40 | 40 |", "| 3 | 40 | 40 |"] {
        assert!(report.contains(line), "{line} in\n{report}");
    }
    assert_eq!(demo.upstream.calls(Endpoint::Cards), 3);
    assert!(
        report.contains("- 40 streams held for 2 s, none dropped: **met**"),
        "{report}"
    );
    assert!(
        report.contains("| server poll interval (`retry:`) | 500 ms |"),
        "{report}"
    );
    assert!(report.contains("server RSS per stream | "), "{report}");
    for chart in ["sse-fan-out.svg", "sse-first-event.svg"] {
        let svg = std::fs::read_to_string(dir.join(chart)).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
    }
}
