//! SSE and polling endpoints over one HTTP registry.

use std::{fmt, future::Future, net::SocketAddr, sync::Arc, task::Poll, time::Duration};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, request::Parts, HeaderMap, HeaderValue, Request, Response, StatusCode},
    response::sse::Event,
};
use futures_core::Stream;
use herdsman::{
    class::{Class, Classify},
    error::{describe, Describe, ErrorKind},
    event::Rejection,
    failure::{FailureClassifier, Verdict},
    http::{retry_after_secs, ClientAddr, ServerErrors, SharedBody},
    registry::{Subscription, TooManySubscribers, Update},
    stats::{Recording, Stats},
};

use crate::{
    error::refusal_response,
    poll::poll_response,
    routes::Toggle,
    shutdown::{Shutdown, SHUTDOWN_RETRY},
    sse::{sse, LastEventId, SseMessage, Until, KEEP_ALIVE},
    streams::OpenStreams,
};

type ClassifyFn = dyn Fn(&Request<Body>) -> Class + Send + Sync;

type SubscribeFn = dyn Fn(Request<Body>) -> Result<Subscription<Response<SharedBody>>, TooManySubscribers>
    + Send
    + Sync;

/// SSE and polling answers over a registry of HTTP responses.
///
/// Built from any function that subscribes a request (usually
/// `move |req| registry.subscribe(req)` on a
/// [`Registry`](herdsman::registry::Registry) made with
/// `RegistryLayer::http`), so it does not carry the registry's type
/// parameters.
///
/// Both answers take the *data request*: the `GET` of the JSON resource
/// whose changes are streamed, with the caller's credentials
/// ([`data_request`] builds it, without the caller's conditional headers,
/// which are no part of the data). All callers of one key share the
/// registry's one poll loop, so a thousand tabs cost the upstream one call
/// per interval.
///
/// How many streams and polls one caller, or one client address, may have
/// open is the registry's to decide: its budgets per caller and per address
/// ([`RegistryLayer::with_callers`](herdsman::registry::RegistryLayer::with_callers);
/// the Coordinator sets them from `registry.max_subscribers_per_caller` and
/// `registry.max_subscribers_per_address`). A refusal is answered as
/// [`error_response`](crate::error_response) maps it: 429 for a caller's or an address's budget,
/// 503 for the registry's capacity, 414 for a key over the maximum length.
/// The caller is read from the data request, and so is its address
/// ([`data_request`] carries it over). Beside those budgets, the process
/// holds at most [`with_max_streams`](Self::with_max_streams) streams
/// (`server.max_event_streams`) from all callers together.
///
/// Given a [`Shutdown`] ([`with_shutdown`](Self::with_shutdown)), its
/// streams end with a last `shutdown` event when it is triggered, so that
/// clients reconnect elsewhere at once and the server's graceful shutdown
/// does not wait for them.
#[derive(Clone)]
pub struct Live {
    subscribe: Arc<SubscribeFn>,
    sse_enabled: Toggle,
    streams: OpenStreams,
    max_streams: usize,
    shutdown: Option<Shutdown>,
    keep_alive: Duration,
    stats: Option<(Stats, Arc<ClassifyFn>)>,
}

impl Live {
    /// Answers over `subscribe`, SSE on.
    pub fn new(
        subscribe: impl Fn(Request<Body>) -> Result<Subscription<Response<SharedBody>>, TooManySubscribers>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        Live {
            subscribe: Arc::new(subscribe),
            sse_enabled: Toggle::new(true),
            streams: OpenStreams::default(),
            max_streams: usize::MAX,
            shutdown: None,
            keep_alive: KEEP_ALIVE,
            stats: None,
        }
    }

    /// The SSE on/off toggle: off, SSE routes answer 503 + `Retry-After`
    /// and clients fall back to polling.
    pub fn with_sse_toggle(mut self, toggle: Toggle) -> Self {
        self.sse_enabled = toggle;
        self
    }

    /// Event streams open at once, at most, from every caller together
    /// (default: no cap but the registry's; the configuration's is
    /// `server.max_event_streams`). At the cap a new stream is answered
    /// `429 Too Many Requests` with `Retry-After: 5`, so that clients poll
    /// meanwhile, and counted as an `event_streams` rejection.
    pub fn with_max_streams(mut self, max: usize) -> Self {
        self.max_streams = max;
        self
    }

    /// Ends every stream, open or opened later, with a last event when
    /// `shutdown` is triggered (see [`shutdown`](crate::shutdown)):
    /// `event: shutdown`, `data: {"retry_ms": 1000}`, `retry: 1000`
    /// ([`SHUTDOWN_RETRY`]), no `id:`, so that a client reconnects a second
    /// later with the id of the last value it has.
    pub fn with_shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// How long an idle stream waits before a keep-alive comment (default
    /// [`KEEP_ALIVE`], 15 s).
    pub fn with_keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = every;
        self
    }

    /// Counts each polling request and each SSE connection as a client
    /// request of its class (from `classify`, given the data request) in
    /// `stats`. They are answered from the Registry, above the Stats layer,
    /// which would otherwise not see them: without this the stats would
    /// show the upstream calls against no client request at all.
    ///
    /// An answer from the subscription counts in `saved.poll_loop`. A
    /// subscription refused by a caller's or an address's budget, or for a
    /// key over the maximum length, is a rejection the registry reports by
    /// its reason (`subscribers_per_caller`, ...), not an error: it never
    /// feeds the error-rate alert. One refused for the registry's capacity
    /// (its keys, its subscribers, its memory) is an `overloaded` error.
    pub fn with_stats(
        mut self,
        stats: Stats,
        classify: impl Classify<Request<Body>> + Send + Sync + 'static,
    ) -> Self {
        self.stats = Some((
            stats,
            Arc::new(move |req: &Request<Body>| classify.classify(req)),
        ));
        self
    }

    fn record(&self, data_request: &Request<Body>) -> Option<Recording> {
        self.stats
            .as_ref()
            .map(|(stats, classify)| stats.start(&classify(data_request)))
    }

    /// The SSE toggle.
    pub fn sse_toggle(&self) -> &Toggle {
        &self.sse_enabled
    }

    /// The count of event streams open now.
    pub fn streams(&self) -> &OpenStreams {
        &self.streams
    }

    /// An SSE response streaming the changes of `data_request`'s resource
    /// ([`sse()`](crate::sse()) says how): one event per change, `id:` the
    /// content's [`event_id`](crate::event_id), `retry:` the poll interval,
    /// keep-alive comments, `Cache-Control: no-store`. A failed poll is sent
    /// as an `upstream-error` event without `id:` (`{"status": n}` or
    /// `{"error": "..."}`, with `"retry_after"`: the seconds until the next
    /// poll), preceded by the last good value if the client does not have
    /// it, and the stream goes on. A subscription the registry refuses is
    /// answered as [`error_response`](crate::error_response) maps its reason.
    pub fn sse(&self, data_request: Request<Body>, last_event_id: LastEventId) -> Response<Body> {
        if !self.sse_enabled.is_on() {
            let mut r = Response::new(Body::from("event streams are switched off; poll instead"));
            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("15"));
            return r;
        }
        let recording = self.record(&data_request);
        let Some(open) = self.streams.try_open(self.max_streams) else {
            if let Some(r) = recording {
                r.rejected(Rejection::EventStreams);
            }
            let mut r = Response::new(Body::from("too many event streams open; poll instead"));
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return r;
        };
        match (self.subscribe)(data_request) {
            Ok(subscription) => {
                if let Some(r) = recording {
                    r.from_poll_loop().ok();
                }
                sse(
                    subscription,
                    last_event_id,
                    encode_http,
                    Some(Box::new(open)),
                    Some(self.until()),
                    self.keep_alive,
                )
            }
            Err(err) => {
                if let Some(r) = recording {
                    refused(r, &err);
                }
                refusal_response(&err)
            }
        }
    }

    /// What ends a stream: the SSE switch turned off (no last event), or
    /// the shutdown (its last event).
    fn until(&self) -> Until {
        let mut off = Box::pin(self.sse_enabled.off());
        let Some(shutdown) = &self.shutdown else {
            return Box::pin(async move {
                off.await;
                None
            });
        };
        let mut shutdown = Box::pin(shutdown.triggered());
        Box::pin(std::future::poll_fn(move |cx| {
            if shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(shutdown_event());
            }
            off.as_mut().poll(cx).map(|()| None)
        }))
    }

    /// The polling response for `data_request`'s resource, as
    /// [`poll_response`] maps the key's state: the current value with a
    /// content `ETag` and `Cache-Control: no-cache`, 304 when `caller`'s
    /// `If-None-Match` matches; while the key fails, its good value marked
    /// stale, or 503 with `Retry-After` until the next poll.
    /// `X-Poll-Interval` gives the key's poll interval in milliseconds (a
    /// browser cannot read SSE's `retry:`, so this is how a polling page
    /// learns it).
    ///
    /// `caller` is the caller's request headers; only `If-None-Match` is
    /// read from them. The conditional headers are the caller's business
    /// and never go into the data request, where they would give every
    /// `ETag` its own poll loop.
    ///
    /// It subscribes for the length of the call, so pollers join the key's
    /// poll loop (give the registry a linger of a few intervals so that the
    /// loop outlives the gap between two polls).
    pub async fn poll(&self, data_request: Request<Body>, caller: &HeaderMap) -> Response<Body> {
        let recording = self.record(&data_request);
        let (response, answered) = self.answer(data_request, caller).await;
        if let Some(r) = recording {
            match answered {
                Answered::Refused(err) => refused(r, &err),
                Answered::FromLoop => match judge(&response) {
                    Verdict::Failure => r.from_poll_loop().error(ErrorKind::Upstream),
                    _ => r.from_poll_loop().ok(),
                },
                Answered::LoopEnded => r.error(ErrorKind::Overloaded),
            }
        }
        response
    }

    /// The answer, and what gave it.
    async fn answer(
        &self,
        data_request: Request<Body>,
        caller: &HeaderMap,
    ) -> (Response<Body>, Answered) {
        let mut subscription = match (self.subscribe)(data_request) {
            Ok(s) => s,
            Err(err) => return (refusal_response(&err), Answered::Refused(err)),
        };
        let (mut response, answered) = match next(&mut subscription).await {
            Some(update) => (
                poll_response(&update, subscription.next_attempt(), caller),
                Answered::FromLoop,
            ),
            None => {
                let mut r = Response::new(Body::from("the poll loop ended"));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                (r, Answered::LoopEnded)
            }
        };
        let ms = subscription.interval().as_millis().max(1);
        response.headers_mut().insert(
            "x-poll-interval",
            HeaderValue::from_str(&ms.to_string()).expect("digits"),
        );
        (response, answered)
    }
}

/// What gave a polling answer.
enum Answered {
    /// The key's poll loop.
    FromLoop,
    /// The loop ended before it had a value.
    LoopEnded,
    /// The registry refused the subscription.
    Refused(TooManySubscribers),
}

/// Finishes the recording of a request whose subscription the registry
/// refused (and reported, by its reason), as the refusal describes itself:
/// a rejection of the request (a caller's own budget, a key too long) is no
/// error of the service's; the registry's capacity (overloaded) is.
fn refused(recording: Recording, err: &TooManySubscribers) {
    match err.kind() {
        ErrorKind::Rejected => recording.refused(),
        kind => recording.error(kind),
    }
}

/// Whether a polling answer is a failure, as the one classifier of the
/// stack judges HTTP answers ([`ServerErrors`]: a 5xx): the answer for a
/// key that fails without a good value is one.
fn judge(response: &Response<Body>) -> Verdict {
    // The classifier reads a `Result`; the answer is only borrowed.
    let status = Response::builder()
        .status(response.status())
        .body(())
        .expect("a status from a response is valid");
    ServerErrors.verdict(&Ok(status))
}

/// The last event of a stream when the server shuts down.
fn shutdown_event() -> Option<Event> {
    let retry_ms = SHUTDOWN_RETRY.as_millis();
    let message = SseMessage::new(format!("{{\"retry_ms\":{retry_ms}}}")).with_event("shutdown");
    message.ok()?.into_event(None, Some(SHUTDOWN_RETRY)).ok()
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

fn encode_http(
    update: &Update<Response<SharedBody>>,
    subscription: &Subscription<Response<SharedBody>>,
) -> Option<SseMessage> {
    match update.result() {
        Ok(response) if response.status().is_success() => {
            match std::str::from_utf8(response.body().data()) {
                Ok(text) => Some(SseMessage::new(text)),
                Err(_) => {
                    tracing::warn!("herdsman: a non-UTF-8 body cannot be sent as SSE data");
                    None
                }
            }
        }
        Ok(response) => SseMessage::new(format!("{{\"status\":{}}}", response.status().as_u16()))
            .with_event("upstream-error")
            .ok(),
        Err(err) => {
            // An upstream error that names its status (a 5xx poll) is sent
            // as that status.
            let status = describe(err).filter(|d| d.kind() == ErrorKind::Upstream);
            let mut data = match status.and_then(|d| d.status()) {
                Some(status) => serde_json::json!({ "status": status }),
                None => serde_json::json!({ "error": err.to_string() }),
            };
            if let Some(at) = subscription.next_attempt() {
                let wait = at.saturating_duration_since(tokio::time::Instant::now());
                data["retry_after"] = retry_after_secs(wait).into();
            }
            SseMessage::new(data.to_string())
                .with_event("upstream-error")
                .ok()
        }
    }
}

impl fmt::Debug for Live {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("sse_enabled", &self.sse_enabled)
            .field("streams", &self.streams)
            .field("max_streams", &self.max_streams)
            .field("shutdown", &self.shutdown)
            .finish_non_exhaustive()
    }
}

/// The data request for an SSE or polling route: `GET path_and_query` with
/// the caller's `Host`, `Authorization` and `Cookie` (so the key keeps its
/// auth partition), `Accept: application/json`, and the caller's client
/// address ([`ClientAddr`]: the one the server inserted, else axum's
/// `ConnectInfo<SocketAddr>`), so that the registry's budgets per address
/// hold. Nothing else of the caller's request is kept: neither its
/// conditional headers (`If-None-Match` goes to [`Live::poll`] with the
/// caller's headers) nor its transport headers, so no caller can split the
/// key of a resource. An identity header that the rollout reads is not
/// copied either: add it when one is configured.
pub fn data_request(caller: &Parts, path_and_query: &str) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    *req.uri_mut() = path_and_query
        .parse()
        .unwrap_or_else(|_| axum::http::Uri::from_static("/"));
    for name in [header::HOST, header::AUTHORIZATION, header::COOKIE] {
        for value in caller.headers.get_all(&name) {
            req.headers_mut().append(name.clone(), value.clone());
        }
    }
    req.headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let extensions = &caller.extensions;
    let address = extensions.get::<ClientAddr>().copied().or_else(|| {
        let ConnectInfo(peer) = extensions.get::<ConnectInfo<SocketAddr>>()?;
        Some(ClientAddr(*peer))
    });
    if let Some(address) = address {
        req.extensions_mut().insert(address);
    }
    req
}
