//! The HTTP side of `audit` and `load`: one hyper-util client, the rule
//! that a load targets loopback unless told otherwise, and small helpers.

use std::{net::IpAddr, time::Duration};

use bytes::Bytes;
use http::{header, uri::Scheme, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};

/// The client every request of `audit` and `load` goes through (but SSE
/// streams, which hold one connection each from their own address).
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// How long one request may take before it counts as an error.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled HTTP/1 client that keeps up to `idle` connections per host.
pub(crate) fn client(idle: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .build(connector)
}

/// A multi-threaded tokio runtime (the load's own work is on it too).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// Parses an `http://host[:port][/path]` URL. Unless `allow_remote`, the
/// host must be a loopback address (`127.0.0.0/8`, `::1`) or `localhost`:
/// a load goes to this machine unless its user says otherwise.
pub(crate) fn target(url: &str, allow_remote: bool) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(format!(
            "{url}: only http:// URLs (no TLS: put the load beside the server)"
        ));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !allow_remote && !is_loopback(host) {
        return Err(format!(
            "{url}: {host} is not a loopback address; a load targets this machine \
             (127.0.0.0/8, ::1, localhost) unless --allow-remote is given"
        ));
    }
    Ok(uri)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `base` with its path and query replaced by `path_and_query`.
pub(crate) fn join(base: &Uri, path_and_query: &str) -> Result<Uri, String> {
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| format!("{path_and_query:?} is not a path"))?,
    );
    Uri::from_parts(parts).map_err(|e| format!("{base}{path_and_query}: {e}"))
}

/// What one request brought back.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Sends one request and reads its whole answer, within [`REQUEST_TIMEOUT`].
pub(crate) async fn send(
    client: &HttpClient,
    method: Method,
    uri: Uri,
    headers: &[(header::HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<Answer, String> {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .body(Full::new(body))
        .map_err(|e| format!("bad request: {e}"))?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| error_chain(&e))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| error_chain(&e))?;
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.to_bytes(),
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
}

/// `GET uri` with `Authorization: Bearer token` when given, as JSON.
pub(crate) async fn get_json(
    client: &HttpClient,
    uri: &Uri,
    token: Option<&str>,
) -> Result<serde_json::Value, String> {
    let mut headers = Vec::new();
    if let Some(token) = token {
        let value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| "the token is not a valid header value".to_owned())?;
        headers.push((header::AUTHORIZATION, value));
    }
    let answer = send(client, Method::GET, uri.clone(), &headers, Bytes::new())
        .await
        .map_err(|e| format!("GET {uri}: {e}"))?;
    if !answer.status.is_success() {
        let hint = match answer.status {
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                " (an admin route: give the admin token with --token)"
            }
            _ => "",
        };
        return Err(format!("GET {uri}: {}{hint}", answer.status));
    }
    serde_json::from_slice(&answer.body).map_err(|e| format!("GET {uri}: not JSON: {e}"))
}

/// An error and its sources, as one line: hyper's own message alone
/// ("client error (Connect)") does not say what went wrong.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Parses `500ms`, `5s`, `2m` or `1h` (a whole number and a unit).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?}: a duration needs a unit (ms, s, m, h)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: not a whole number and a unit"))?;
    let ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_millis(n.saturating_mul(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_pass_and_others_need_the_flag() {
        for ok in [
            "http://127.0.0.1:3000/api",
            "http://127.9.8.7/",
            "http://[::1]:80/",
            "http://localhost:3000",
        ] {
            assert!(target(ok, false).is_ok(), "{ok}");
        }
        for remote in ["http://10.0.0.1/", "http://example.com/", "http://[::2]/"] {
            let err = target(remote, false).unwrap_err();
            assert!(err.contains("--allow-remote"), "{err}");
            assert!(target(remote, true).is_ok(), "{remote}");
        }
        assert!(target("https://127.0.0.1/", false).is_err());
    }

    #[test]
    fn durations_read_their_unit() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("5").is_err());
        assert!(duration("5x").is_err());
    }
}
