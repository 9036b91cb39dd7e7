//! The router helper: one resource's polling and SSE routes in one call.

use axum::{
    extract::{RawPathParams, Request, State},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};

use crate::{
    live::{data_request, Live},
    sse::LastEventId,
};

/// What the routes of one resource need: the answers and the data path.
#[derive(Clone)]
struct Resource {
    live: Live,
    /// The data route's pattern, such as `/api/boards/{board}/events`.
    data: &'static str,
}

impl Live {
    /// The routes of one resource: `GET data_path` answers polls
    /// ([`Live::poll`]) and `GET sse_path` streams its changes
    /// ([`Live::sse`]), both over the registry's one poll loop per key.
    ///
    /// `data_path` is the resource's route, which the registry's loop
    /// polls (the Coordinator's stack must route it to the upstream, and
    /// the endpoint class is matched on it). `sse_path` may capture the
    /// same parameters (`/sse/boards/{board}/events` beside
    /// `/api/boards/{board}/events`): the stream is of the data path with
    /// those values, percent-encoded again. A parameter of `data_path` that
    /// `sse_path` does not capture answers 404. The data request carries
    /// the caller's credentials and address ([`data_request`]); the poll's
    /// query string is kept, the stream's is not.
    ///
    /// An application that must add to the data request (an identity
    /// header a rollout reads) or check the path parameters writes its own
    /// two handlers over [`Live::poll`] and [`Live::sse`], as
    /// `examples/active-users` does.
    ///
    /// # Panics
    ///
    /// As [`Router::route`] does, when a path is not a valid route.
    pub fn routes<S>(&self, data_path: &'static str, sse_path: &'static str) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let resource = Resource {
            live: self.clone(),
            data: data_path,
        };
        Router::new()
            .route(data_path, get(poll))
            .route(sse_path, get(stream))
            .with_state(resource)
    }
}

async fn poll(State(resource): State<Resource>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    resource
        .live
        .poll(data_request(&parts, &path), &parts.headers)
        .await
}

async fn stream(
    State(resource): State<Resource>,
    params: RawPathParams,
    last: LastEventId,
    req: Request,
) -> Response {
    let (parts, _): (Parts, _) = req.into_parts();
    let Some(path) = fill(resource.data, &params) else {
        return (StatusCode::NOT_FOUND, "no such resource").into_response();
    };
    resource.live.sse(data_request(&parts, &path), last)
}

/// `pattern` with each `{name}` replaced by that parameter's value,
/// percent-encoded (a value is decoded text, and may hold a `/`). `None`
/// if a parameter is missing.
fn fill(pattern: &str, params: &RawPathParams) -> Option<String> {
    let mut out = String::with_capacity(pattern.len());
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = open + rest[open..].find('}')?;
        let name = rest[open + 1..close].trim_start_matches('*');
        let (_, value) = params.iter().find(|(n, _)| *n == name)?;
        encode(value, &mut out);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Percent-encodes all but RFC 3986's unreserved characters.
fn encode(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn values_are_percent_encoded_but_unreserved_characters() {
        let mut out = String::new();
        encode("a-b_c.d~e/f g?é", &mut out);
        assert_eq!(out, "a-b_c.d~e%2Ff%20g%3F%C3%A9");
    }
}
