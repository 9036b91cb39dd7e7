//! The client: one shared connection per URL, handed out as subscriptions.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock, Weak,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client as HyperClient},
    rt::TokioExecutor,
};
use tokio::{sync::broadcast, task::AbortHandle};
use tokio_stream::wrappers::BroadcastStream;
use tower_service::Service;

use crate::{
    driver::Driver,
    event_stream::{DEFAULT_MAX_EVENT, DEFAULT_MAX_LINE},
    update::{Subscription, Update},
    BoxError,
};

/// The default transport: hyper-util's pooled HTTP/1 client over plain TCP.
pub type HttpClient = HyperClient<HttpConnector, Empty<Bytes>>;

/// The requests a [`Client`] sends: `GET`s with an empty body.
pub type ClientRequest = Request<Empty<Bytes>>;

/// What a [`Client`] needs of its HTTP service: any tower service of
/// [`ClientRequest`]s answering `http::Response`s, cloneable and `Send`
/// (hyper-util's client, or one wrapped in layers: herdsman's, tower-http's
/// headers or timeouts).
pub trait HttpService:
    Service<
        ClientRequest,
        Response = Response<Self::ResponseBody>,
        Error = Self::Failure,
        Future = Self::Call,
    > + Clone
    + Send
    + Sync
    + 'static
{
    /// The response body.
    type ResponseBody: Body<Data = Self::Chunk, Error = Self::BodyError> + Send + Unpin + 'static;
    /// The body's chunks.
    type Chunk: bytes::Buf + Send;
    /// The body's error.
    type BodyError: Into<BoxError>;
    /// The service's error.
    type Failure: Into<BoxError>;
    /// The service's future.
    type Call: std::future::Future<Output = Result<Response<Self::ResponseBody>, Self::Failure>>
        + Send;
}

impl<S, B, E> HttpService for S
where
    S: Service<ClientRequest, Response = Response<B>, Error = E> + Clone + Send + Sync + 'static,
    S::Future: Send,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type ResponseBody = B;
    type Chunk = B::Data;
    type BodyError = B::Error;
    type Failure = E;
    type Call = S::Future;
}

/// The client's timings and bounds ([`Builder`] sets them).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) retry: Duration,
    pub(crate) max_backoff: Duration,
    pub(crate) failures_before_fallback: u32,
    pub(crate) first_byte_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) probe_every: Duration,
    pub(crate) max_line: usize,
    pub(crate) max_event: usize,
    pub(crate) capacity: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            failures_before_fallback: 3,
            first_byte_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(45),
            connect_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            probe_every: Duration::from_secs(10),
            max_line: DEFAULT_MAX_LINE,
            max_event: DEFAULT_MAX_EVENT,
            capacity: 64,
        }
    }
}

/// Counts of what a client did, since it was built.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) connects: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) fallbacks: AtomicU64,
    pub(crate) returns: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) polls: AtomicU64,
    pub(crate) bytes: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What a [`Client`] did since it was built ([`Client::stats`]). The same
/// counts go to the `metrics` facade (`docs/METRICS.md` lists them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientStats {
    /// Event streams opened (an SSE answer accepted: 200,
    /// `text/event-stream`).
    pub connects: u64,
    /// Stream connection attempts after the first, for any reason.
    pub reconnects: u64,
    /// Switches from SSE to polling.
    pub fallbacks: u64,
    /// Switches back from polling to SSE (a probe that succeeded).
    pub returns: u64,
    /// Updates delivered to subscribers (one per change, however many
    /// subscribers share it).
    pub events: u64,
    /// Polling requests sent.
    pub polls: u64,
    /// Body bytes received, both transports.
    pub bytes: u64,
    /// URLs with an open shared connection now.
    pub open: u64,
}

/// How a polling URL is found for a stream's URL.
type PollUrlFn = dyn Fn(&Uri) -> Option<Uri> + Send + Sync;

/// Builds a [`Client`].
pub struct Builder {
    settings: Settings,
    poll_url: Arc<PollUrlFn>,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            settings: Settings::default(),
            poll_url: Arc::new(herdsman_poll_url),
        }
    }
}

/// herdsman-axum's scheme: `/sse/<rest>` streams what `/api/<rest>` polls.
fn herdsman_poll_url(url: &Uri) -> Option<Uri> {
    let path_and_query = url.path_and_query()?.as_str();
    let rest = path_and_query.strip_prefix("/sse/")?;
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(format!("/api/{rest}").parse().ok()?);
    Uri::from_parts(parts).ok()
}

impl Builder {
    /// The reconnection time until the server sends `retry:` (default
    /// 1 s): the first wait after a stream ends, doubled after each failed
    /// attempt.
    pub fn with_retry(mut self, retry: Duration) -> Self {
        self.settings.retry = retry;
        self
    }

    /// The longest backoff between failed attempts (default 30 s), unless
    /// the server's `retry:` or `Retry-After` asks for longer.
    pub fn with_max_backoff(mut self, max: Duration) -> Self {
        self.settings.max_backoff = max;
        self
    }

    /// How many stream connections in a row may fail (no answer, an error
    /// status, a stream that never sent a byte) before the client falls
    /// back to polling (default 3). A 503, 404 or 405, or an answer that
    /// is not `text/event-stream`, falls back at once.
    pub fn with_failures_before_fallback(mut self, n: u32) -> Self {
        self.settings.failures_before_fallback = n.max(1);
        self
    }

    /// How long an accepted stream may take to send its first byte (default
    /// 20 s). A stream that sends nothing for that long, not even a
    /// keep-alive comment, is taken for a proxy that buffers the response,
    /// and the client falls back to polling. Keep it above the server's
    /// keep-alive interval (herdsman-axum's is 15 s): a server may rightly
    /// send nothing else at first (herdsman-axum, when `Last-Event-ID`
    /// names its current value). While a probe from polling waits for its
    /// first byte, polls go on.
    pub fn with_first_byte_timeout(mut self, timeout: Duration) -> Self {
        self.settings.first_byte_timeout = timeout;
        self
    }

    /// How long an open stream may be silent before the client drops it and
    /// reconnects (default 45 s: three of herdsman-axum's 15 s keep-alives).
    pub fn with_read_timeout(mut self, timeout: Duration) -> Self {
        self.settings.read_timeout = timeout;
        self
    }

    /// How long a request may wait for the response head (default 10 s),
    /// and a polling answer for its body.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// The polling interval when the answer has no `X-Poll-Interval` and
    /// the stream sent no `retry:` (default 5 s).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval = interval;
        self
    }

    /// How often a polling client tries the stream again (default 10 s, or
    /// the server's `Retry-After` if longer).
    pub fn with_probe_every(mut self, every: Duration) -> Self {
        self.settings.probe_every = every;
        self
    }

    /// The parser's bounds: the longest line and the largest event, in
    /// bytes ([`Parser`](crate::event_stream::Parser)); the largest
    /// polling body is `max_event`. Over them the connection is dropped.
    pub fn with_limits(mut self, max_line: usize, max_event: usize) -> Self {
        self.settings.max_line = max_line;
        self.settings.max_event = max_event;
        self
    }

    /// How many updates a subscriber may fall behind before it skips some
    /// ([`Lagged`](crate::Lagged)); default 64.
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.settings.capacity = capacity.max(1);
        self
    }

    /// How the polling URL is found for a stream's URL. The default is
    /// herdsman-axum's scheme, `/sse/<rest>` → `/api/<rest>` on the same
    /// origin; for any other URL there is none, and the client keeps
    /// reconnecting the stream instead of falling back.
    pub fn with_poll_url(
        mut self,
        derive: impl Fn(&Uri) -> Option<Uri> + Send + Sync + 'static,
    ) -> Self {
        self.poll_url = Arc::new(derive);
        self
    }

    /// A client over hyper-util's HTTP/1 client.
    pub fn build(self) -> Client<HttpClient> {
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        self.build_with(http)
    }

    /// A client over `service`.
    pub fn build_with<S: HttpService>(self, service: S) -> Client<S> {
        Client {
            inner: Arc::new(Inner {
                service,
                settings: Arc::new(self.settings),
                poll_url: self.poll_url,
                counters: Arc::new(Counters::default()),
                urls: Arc::new(Mutex::new(HashMap::new())),
            }),
        }
    }
}

/// A Server-Sent Events client with a polling fallback, and one
/// connection per URL however many subscribers ([crate docs](crate)).
///
/// Clones share the connections: make one per process (or use
/// [`Client::shared`]).
pub struct Client<S = HttpClient> {
    inner: Arc<Inner<S>>,
}

struct Inner<S> {
    service: S,
    settings: Arc<Settings>,
    poll_url: Arc<PollUrlFn>,
    counters: Arc<Counters>,
    urls: Arc<Urls>,
}

type Urls = Mutex<HashMap<String, Weak<Entry>>>;

impl<S> Clone for Client<S> {
    fn clone(&self) -> Self {
        Client {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("settings", &self.inner.settings)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Client<HttpClient> {
    /// A client with the default settings over hyper-util.
    pub fn new() -> Self {
        Builder::default().build()
    }

    /// The process's client: one connection per URL for the whole
    /// process, whoever subscribes (the browser hook registry's rule).
    pub fn shared() -> Self {
        static SHARED: OnceLock<Client> = OnceLock::new();
        SHARED.get_or_init(Client::new).clone()
    }
}

impl Default for Client<HttpClient> {
    fn default() -> Self {
        Client::new()
    }
}

impl Client<HttpClient> {
    /// A [`Builder`] to set timings and bounds.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// A URL the client cannot subscribe to.
#[derive(Debug)]
pub struct InvalidUrl {
    url: String,
}

impl fmt::Display for InvalidUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an absolute http URL: {:?}", self.url)
    }
}

impl std::error::Error for InvalidUrl {}

impl<S: HttpService> Client<S> {
    /// Subscribes to the Server-Sent Events stream at `url` (an absolute
    /// `http://` URL).
    ///
    /// The first subscriber of a URL opens its connection; the others
    /// share it, and get its current value at once. When the last
    /// subscription is dropped, the connection closes. Must be called
    /// within a tokio runtime.
    pub fn subscribe(&self, url: &str) -> Result<Subscription, InvalidUrl> {
        let uri: Uri = url.parse().map_err(|_| InvalidUrl {
            url: url.to_owned(),
        })?;
        if uri.scheme().is_none() || uri.authority().is_none() {
            return Err(InvalidUrl {
                url: url.to_owned(),
            });
        }
        let key = uri.to_string();
        let mut urls = self.inner.urls.lock().expect("not poisoned");
        let entry = match urls.get(&key).and_then(Weak::upgrade) {
            Some(entry) if !entry.channel.is_closed() => entry,
            _ => {
                let entry = self.open(uri, key.clone());
                urls.insert(key, Arc::downgrade(&entry));
                entry
            }
        };
        drop(urls);
        let (first, receiver) = entry.channel.join();
        Ok(Subscription {
            first,
            updates: BroadcastStream::new(receiver),
            entry,
        })
    }

    fn open(&self, uri: Uri, key: String) -> Arc<Entry> {
        let inner = &self.inner;
        let channel = Arc::new(Channel::new(inner.settings.capacity));
        let poll_url = (inner.poll_url)(&uri);
        let driver = Driver::new(
            inner.service.clone(),
            uri,
            poll_url,
            Arc::clone(&inner.settings),
            Arc::clone(&channel),
            Arc::clone(&inner.counters),
        );
        let task = tokio::spawn(driver.run()).abort_handle();
        metrics::gauge!("herdsman_client_open_urls").increment(1);
        Arc::new(Entry {
            url: key,
            channel,
            task,
            urls: Arc::downgrade(&inner.urls),
        })
    }
}

impl<S> Client<S> {
    /// What the client did so far.
    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let open = self
            .inner
            .urls
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|w| w.strong_count() > 0)
            .count();
        ClientStats {
            connects: get(&c.connects),
            reconnects: get(&c.reconnects),
            fallbacks: get(&c.fallbacks),
            returns: get(&c.returns),
            events: get(&c.events),
            polls: get(&c.polls),
            bytes: get(&c.bytes),
            open: open as u64,
        }
    }
}

/// One URL's shared connection: held by its subscriptions; the last one
/// dropped stops the driver.
pub(crate) struct Entry {
    url: String,
    channel: Arc<Channel>,
    task: AbortHandle,
    urls: Weak<Urls>,
}

impl Entry {
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
        metrics::gauge!("herdsman_client_open_urls").decrement(1);
        tracing::debug!(url = %self.url, "herdsman-client: last subscriber gone, connection closed");
        if let Some(urls) = self.urls.upgrade() {
            let mut urls = urls.lock().expect("not poisoned");
            // A new subscriber may have opened a new entry meanwhile.
            if urls.get(&self.url).is_some_and(|w| w.strong_count() == 0) {
                urls.remove(&self.url);
            }
        }
    }
}

/// The updates of one URL: the latest (for late subscribers) and the fan
/// out, under one lock so that a joining subscriber sees each update once.
pub(crate) struct Channel {
    state: Mutex<ChannelState>,
}

struct ChannelState {
    latest: Option<Update>,
    published: u64,
    sender: Option<broadcast::Sender<Update>>,
}

impl Channel {
    fn new(capacity: usize) -> Self {
        Channel {
            state: Mutex::new(ChannelState {
                latest: None,
                published: 0,
                sender: Some(broadcast::channel(capacity).0),
            }),
        }
    }

    fn join(&self) -> (Option<Update>, broadcast::Receiver<Update>) {
        let state = self.state.lock().expect("not poisoned");
        let receiver = match &state.sender {
            Some(sender) => sender.subscribe(),
            // Ended: a receiver that ends at once.
            None => broadcast::channel(1).1,
        };
        (state.latest.clone(), receiver)
    }

    /// Sends `update` to every subscriber. A value becomes the latest; an
    /// error event marks the latest value stale.
    pub(crate) fn publish(&self, mut update: Update) {
        let mut state = self.state.lock().expect("not poisoned");
        state.published += 1;
        update.sequence = state.published;
        if update.event_type() == "upstream-error" {
            if let Some(latest) = &mut state.latest {
                latest.stale = true;
            }
        } else {
            state.latest = Some(update.clone());
        }
        if let Some(sender) = &state.sender {
            // No receiver now is fine: the latest waits for the next one.
            let _ = sender.send(update);
        }
    }

    /// Ends every subscription (the server said stop).
    pub(crate) fn close(&self) {
        self.state.lock().expect("not poisoned").sender = None;
    }

    fn is_closed(&self) -> bool {
        self.state.lock().expect("not poisoned").sender.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polling_url_of_an_sse_route_is_its_api_route() {
        let poll = |u: &str| herdsman_poll_url(&u.parse().unwrap()).map(|u| u.to_string());
        assert_eq!(
            poll("http://127.0.0.1:3000/sse/active-users").as_deref(),
            Some("http://127.0.0.1:3000/api/active-users")
        );
        assert_eq!(
            poll("http://h/sse/boards/b1/events?x=1").as_deref(),
            Some("http://h/api/boards/b1/events?x=1")
        );
        assert_eq!(poll("http://h/events"), None);
    }

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<Client>();
        assert_send_sync::<Builder>();
        assert_send_sync::<Update>();
        assert_send_sync::<ClientStats>();
        assert_send_sync::<crate::event_stream::Parser>();
        fn assert_send<T: Send>() {}
        assert_send::<crate::Subscription>();
    }
}
