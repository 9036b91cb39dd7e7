//! HTTP requests to an in-process upstream (`http://api/...`) and what a
//! caller reads back.

use bytes::Bytes;
use herdsman::BoxError;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};

/// A request for `path` on `http://api` with these headers and an empty
/// body.
pub(crate) fn request(
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://api{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::default()).unwrap()
}

/// A `GET` of `path` on `http://api`, without headers.
pub(crate) fn get(path: &str) -> Request<Full<Bytes>> {
    request(Method::GET, path, &[])
}

/// What a caller received: the status, the headers and the whole body as
/// text.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The response status.
    pub(crate) status: StatusCode,
    /// The response headers.
    pub(crate) headers: HeaderMap,
    /// The whole body, read to its end (UTF-8).
    pub(crate) body: String,
}

/// Reads `response` whole: its status, headers and body.
pub(crate) async fn reply<B>(response: Response<B>) -> Result<Reply, BoxError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8(body.to_vec())?,
    })
}
