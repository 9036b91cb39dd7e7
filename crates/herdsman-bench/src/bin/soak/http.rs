//! The soak's HTTP client: hyper-util's, one connection pool for every
//! simulated client, as the end-to-end tests use it.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde_json::Value;

/// How long one request may take, headers and body, before it counts as
/// failed (an event stream's headers only).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo's base URL, its admin token, and a client. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: Option<String>,
}

impl Http {
    pub(crate) fn new(base: &str, token: Option<String>) -> Http {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http();
        Http {
            client,
            base: base.to_owned(),
            token,
        }
    }

    /// A request to `path` of the demo.
    pub(crate) fn request(&self, method: Method, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
    }

    /// Sends `req`; `Err` for a transport failure or the timeout.
    pub(crate) async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, ()> {
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req)).await {
            Ok(Ok(response)) => Ok(response),
            _ => Err(()),
        }
    }

    /// Sends `req` and reads the whole body; `Err` for a transport failure
    /// or the timeout.
    pub(crate) async fn fetch(&self, req: Request<Full<Bytes>>) -> Result<Response<Bytes>, ()> {
        let read = async {
            let response = self.client.request(req).await.map_err(drop)?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(drop)?.to_bytes();
            Ok(Response::from_parts(parts, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .unwrap_or(Err(()))
    }

    /// `builder` with the admin token, if any.
    pub(crate) fn admin(&self, builder: http::request::Builder) -> http::request::Builder {
        match self
            .token
            .as_deref()
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
        {
            Some(value) => builder.header(header::AUTHORIZATION, value),
            None => builder,
        }
    }

    /// `POST path` with a JSON body, as admin: the status, or `Err`.
    pub(crate) async fn admin_post(&self, path: &str, json: &Value) -> Result<StatusCode, ()> {
        let req = self
            .admin(self.request(Method::POST, path))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(json.to_string())))
            .map_err(drop)?;
        self.fetch(req).await.map(|r| r.status())
    }

    /// The stats document, if the demo answered it.
    pub(crate) async fn stats(&self) -> Option<Value> {
        let req = self
            .admin(self.request(Method::GET, "/_herdsman/stats"))
            .body(Full::default())
            .ok()?;
        let response = self.fetch(req).await.ok()?;
        if response.status() != StatusCode::OK {
            return None;
        }
        serde_json::from_slice(response.body()).ok()
    }

    /// Waits until the stats document answers, at most `limit`.
    pub(crate) async fn wait_ready(&self, limit: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if self.stats().await.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "{} did not answer GET /_herdsman/stats with 200 within {limit:?} \
             (is it running; is the admin token right?)",
            self.base
        ))
    }
}
