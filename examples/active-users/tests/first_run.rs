//! The demo binary's first run: with no admin token configured in
//! production, the token it makes goes to stderr once, as a URL that opens
//! the dashboard, whatever `RUST_LOG` says; never through the logs; and
//! logs written to a pipe carry no colours.

use std::{net::SocketAddr, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, ChildStderr, Command},
    time::timeout,
};

const BOUND: Duration = Duration::from_secs(30);

/// Starts the demo in production, without a token, logging at `rust_log`.
fn start(rust_log: &str) -> (Child, tokio::io::Lines<BufReader<ChildStderr>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_active-users"))
        .env("HERDSMAN_ENV", "production")
        .env("HERDSMAN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", rust_log)
        .env_remove("HERDSMAN_CONFIG")
        .env_remove("HERDSMAN__ADMIN__TOKEN")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the demo binary starts");
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, lines)
}

/// The stderr lines up to and including the dashboard's URL; the address
/// and the token.
async fn until_url(
    lines: &mut tokio::io::Lines<BufReader<ChildStderr>>,
) -> (Vec<String>, SocketAddr, String) {
    timeout(BOUND, async {
        let mut seen = Vec::new();
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line.clone());
            let Some(rest) = line.trim().strip_prefix("http://") else {
                continue;
            };
            let (addr, token) = rest.split_once("/_herdsman/#token=").expect("the URL");
            return (seen, addr.parse().unwrap(), token.to_owned());
        }
        panic!("no URL on stderr: {seen:#?}");
    })
    .await
    .expect("the URL within the bound")
}

async fn status(addr: SocketAddr, path: &str, token: Option<&str>) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token.map_or(String::new(), |t| format!("authorization: Bearer {t}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nhost: demo\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn the_generated_token_reaches_stderr_as_a_working_url_even_with_logs_off() {
    let (_child, mut lines) = start("off");
    let (seen, addr, token) = until_url(&mut lines).await;
    assert_eq!(token.len(), 32, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("active-users: listening on http://")),
        "{seen:#?}"
    );
    // The token is this run's: it opens the admin routes, which are
    // closed without it.
    assert_eq!(
        status(addr, "/_herdsman/stats", Some(&token)).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(addr, "/_herdsman/stats", None).await,
        "HTTP/1.1 403 Forbidden"
    );
}

#[tokio::test]
async fn logs_to_a_pipe_are_plain_and_never_carry_the_token() {
    let (_child, mut lines) = start("info");
    let (seen, _, token) = until_url(&mut lines).await;
    let logged: Vec<&String> = seen.iter().filter(|l| l.contains("INFO")).collect();
    assert!(!logged.is_empty(), "the logs are on: {seen:#?}");
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "no ANSI escapes: {seen:#?}"
    );
    let carrying: Vec<&String> = seen.iter().filter(|l| l.contains(&token)).collect();
    assert_eq!(carrying.len(), 1, "only the URL line: {carrying:#?}");
    assert!(!carrying[0].contains("INFO"), "{carrying:#?}");
}
