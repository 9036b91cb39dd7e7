//! One URL's connection: the event stream, reconnection, the polling
//! fallback and the way back, feeding the URL's subscribers.

use std::{
    hash::{Hash, Hasher},
    sync::Arc,
    time::Duration,
};

use bytes::Buf;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};
use tracing::Instrument;

use crate::{
    backoff::{backoff, XorShift},
    client::{Channel, Counters, HttpService, Settings},
    event_stream::{Event, Parser},
    update::{Transport, Update},
    BoxError,
};

/// What to do next.
enum Mode {
    /// Connect the stream after this wait.
    Stream(Duration),
    /// Poll until this instant, then probe the stream.
    Poll(Instant),
    /// The server said stop (204).
    Stop,
}

/// How one stream connection went.
#[derive(Debug)]
enum Outcome {
    /// The stream was open, then ended (closed, stalled, broke a bound);
    /// `events`: whether it delivered any.
    Ended { events: bool },
    /// No stream: no answer, an error status; wait at least the
    /// `Retry-After`, if any.
    Failed(Option<Duration>),
    /// No stream, for a reason that polling may get around.
    Fallback {
        why: &'static str,
        retry_after: Option<Duration>,
    },
    /// 429: try again after this.
    Wait(Duration),
    /// 204: stop.
    Stop,
}

/// What subscribers were last given, to keep duplicates out across
/// reconnections and switches of transport.
#[derive(Debug, Default)]
struct Seen {
    id: Option<String>,
    hash: Option<u64>,
    stale: bool,
    transport: Option<Transport>,
}

fn hash(data: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data.hash(&mut h);
    h.finish()
}

impl Seen {
    /// Whether a value is one subscribers have, in the state they have it.
    /// An id names a version; across a switch of transport (or for a
    /// polling answer, which is always a whole state) equal data is the
    /// same value too.
    fn has(&self, id: Option<&str>, data: u64, stale: bool, transport: Transport) -> bool {
        if stale != self.stale {
            return false;
        }
        let same_id = id.is_some() && id == self.id.as_deref();
        let by_data = transport == Transport::Polling || self.transport != Some(transport);
        same_id || (by_data && self.hash == Some(data))
    }
}

pub(crate) struct Driver<S> {
    service: S,
    url: Uri,
    poll_url: Option<Uri>,
    settings: Arc<Settings>,
    channel: Arc<Channel>,
    counters: Arc<Counters>,
    parser: Parser,
    seen: Seen,
    rng: XorShift,
    failures: u32,
    attempts: u64,
    polling: bool,
    /// The first event of a connection may repeat what subscribers have.
    just_connected: bool,
    /// `If-None-Match` for the next poll.
    etag: Option<HeaderValue>,
    /// `Last-Event-ID` for the next connection: the stream's last event id
    /// (moved by blocks without data too, as a browser's), or the version
    /// of the last polling answer, whichever came last.
    resume: String,
    /// The wait between polls, as the last polling answer gave it.
    interval: Duration,
}

impl<S: HttpService> Driver<S> {
    pub(crate) fn new(
        service: S,
        url: Uri,
        poll_url: Option<Uri>,
        settings: Arc<Settings>,
        channel: Arc<Channel>,
        counters: Arc<Counters>,
    ) -> Self {
        let parser = Parser::new()
            .with_max_line(settings.max_line)
            .with_max_event(settings.max_event);
        let interval = settings.poll_interval;
        Driver {
            service,
            url,
            poll_url,
            settings,
            channel,
            counters,
            parser,
            seen: Seen::default(),
            rng: XorShift::seeded(),
            failures: 0,
            attempts: 0,
            polling: false,
            just_connected: false,
            etag: None,
            resume: String::new(),
            interval,
        }
    }

    /// Runs until the server says stop (or the task is aborted, when the
    /// last subscriber goes).
    pub(crate) async fn run(mut self) {
        let span = tracing::info_span!("herdsman_client", url = %self.url);
        async move {
            let mut mode = Mode::Stream(Duration::ZERO);
            loop {
                mode = match mode {
                    Mode::Stream(wait) => {
                        sleep(wait).await;
                        let outcome = self.stream().await;
                        tracing::debug!(?outcome, "stream connection over");
                        self.next_mode(outcome)
                    }
                    Mode::Poll(probe_at) => {
                        self.poll_until(probe_at).await;
                        Mode::Stream(Duration::ZERO)
                    }
                    Mode::Stop => break,
                };
            }
            tracing::info!("the server stopped the stream (204)");
            self.channel.close();
        }
        .instrument(span)
        .await;
    }

    /// The wait before the next attempt after `failures` failed ones: the
    /// reconnection time after the first (or none), doubled after each
    /// more.
    fn delay(&mut self) -> Duration {
        let base = self.parser.retry().unwrap_or(self.settings.retry);
        let doublings = self.failures.saturating_sub(1);
        backoff(base, doublings, self.settings.max_backoff, &mut self.rng)
    }

    fn next_mode(&mut self, outcome: Outcome) -> Mode {
        let every = self.settings.probe_every;
        let probe = |after: Option<Duration>| {
            Mode::Poll(Instant::now() + after.unwrap_or_default().max(every))
        };
        match outcome {
            Outcome::Stop => Mode::Stop,
            Outcome::Ended { events: true } => {
                self.failures = 0;
                Mode::Stream(self.delay())
            }
            Outcome::Ended { events: false } => self.failed(None, "streams end without an event"),
            Outcome::Failed(after) => self.failed(after, "connections fail"),
            Outcome::Fallback { why, retry_after } => {
                if self.poll_url.is_none() {
                    return self.failed(retry_after, why);
                }
                self.fall_back(why);
                probe(retry_after)
            }
            Outcome::Wait(after) if self.polling => probe(Some(after)),
            Outcome::Wait(after) => Mode::Stream(after),
        }
    }

    /// One more failed attempt: back off, or poll after enough of them.
    fn failed(&mut self, after: Option<Duration>, why: &'static str) -> Mode {
        self.failures = self.failures.saturating_add(1);
        let poll = self.polling || self.failures >= self.settings.failures_before_fallback;
        if poll && self.poll_url.is_some() {
            self.fall_back(why);
            let after = after.unwrap_or_default().max(self.settings.probe_every);
            return Mode::Poll(Instant::now() + after);
        }
        Mode::Stream(self.delay().max(after.unwrap_or_default()))
    }

    fn fall_back(&mut self, why: &'static str) {
        if !self.polling {
            self.polling = true;
            Counters::add(&self.counters.fallbacks, 1);
            metrics::counter!("herdsman_client_fallbacks_total").increment(1);
            tracing::warn!(why, poll_url = ?self.poll_url.as_ref().map(Uri::to_string), "falling back to polling");
        }
    }

    /// Sends `req` through a clone of the service.
    async fn call(
        &self,
        req: Request<Empty<bytes::Bytes>>,
    ) -> Result<Response<S::ResponseBody>, BoxError> {
        let mut service = self.service.clone();
        std::future::poll_fn(|cx| service.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        service.call(req).await.map_err(Into::into)
    }

    /// One stream connection, read to its end.
    async fn stream(&mut self) -> Outcome {
        self.attempts += 1;
        if self.attempts > 1 {
            Counters::add(&self.counters.reconnects, 1);
            metrics::counter!("herdsman_client_reconnects_total").increment(1);
        }
        let mut req = Request::get(self.url.clone())
            .header(header::ACCEPT, "text/event-stream")
            .header(header::CACHE_CONTROL, "no-cache");
        let resume = Some(self.resume.as_str()).filter(|id| !id.is_empty());
        if let Some(id) = resume.and_then(|id| HeaderValue::from_str(id).ok()) {
            req = req.header("last-event-id", id);
        }
        let req = req.body(Empty::new()).expect("a valid request");
        let response = match timeout(self.settings.connect_timeout, self.call(req)).await {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => {
                tracing::info!(error = %err, "stream connection failed");
                return Outcome::Failed(None);
            }
            Err(_) => {
                tracing::info!("no answer to the stream request in time");
                return Outcome::Failed(None);
            }
        };
        let retry_after = retry_after(response.headers());
        match response.status() {
            StatusCode::NO_CONTENT => return Outcome::Stop,
            StatusCode::TOO_MANY_REQUESTS => {
                return match retry_after {
                    Some(after) => Outcome::Wait(after),
                    None => Outcome::Failed(None),
                }
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                return Outcome::Fallback {
                    why: "503",
                    retry_after,
                }
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => {
                return Outcome::Fallback {
                    why: "no stream route (404 or 405)",
                    retry_after,
                }
            }
            StatusCode::OK => {}
            status => {
                tracing::info!(%status, "the stream request was refused");
                return Outcome::Failed(retry_after);
            }
        }
        if !is_event_stream(response.headers()) {
            return Outcome::Fallback {
                why: "not text/event-stream",
                retry_after: None,
            };
        }
        self.read(response.into_body()).await
    }

    /// Reads an accepted stream until it ends, stalls or breaks a bound.
    async fn read(&mut self, mut body: S::ResponseBody) -> Outcome {
        self.parser = self.parser.reconnected().with_last_event_id(&self.resume);
        let mut events = Vec::new();
        let (mut first, mut delivered) = (true, false);
        loop {
            let frame = if first {
                self.first_frame(&mut body).await
            } else {
                timeout(self.settings.read_timeout, body.frame()).await.ok()
            };
            let frame = match frame {
                Some(Some(Ok(frame))) => frame,
                Some(Some(Err(err))) => {
                    let err: BoxError = err.into();
                    tracing::info!(error = %err, "the stream broke");
                    return Outcome::Ended { events: delivered };
                }
                Some(None) => return Outcome::Ended { events: delivered },
                None if first => {
                    return Outcome::Fallback {
                        why: "no first byte in time (a buffering proxy?)",
                        retry_after: None,
                    }
                }
                None => {
                    tracing::info!(timeout = ?self.settings.read_timeout, "the stream stalled");
                    return Outcome::Ended { events: delivered };
                }
            };
            let Ok(mut data) = frame.into_data() else {
                continue;
            };
            let chunk = data.copy_to_bytes(data.remaining());
            if chunk.is_empty() {
                continue;
            }
            if std::mem::take(&mut first) {
                self.accepted();
            }
            Counters::add(&self.counters.bytes, chunk.len() as u64);
            metrics::counter!("herdsman_client_bytes_total", "transport" => "sse")
                .increment(chunk.len() as u64);
            let result = self.parser.feed_into(&chunk, &mut events);
            self.parser.last_event_id().clone_into(&mut self.resume);
            for event in events.drain(..) {
                delivered = true;
                self.on_event(event);
            }
            if let Err(err) = result {
                tracing::warn!(error = %err, "dropping the stream");
                return Outcome::Failed(None);
            }
        }
    }

    /// The first frame of an accepted stream, or `None` if none came within
    /// the first-byte timeout. A server may rightly send nothing at first
    /// (herdsman-axum, when `Last-Event-ID` names its current value, until
    /// its next change or keep-alive), so a probe from polling keeps
    /// polling meanwhile: subscribers miss no change while the stream
    /// proves itself.
    async fn first_frame(
        &mut self,
        body: &mut S::ResponseBody,
    ) -> Option<Option<Result<http_body::Frame<S::Chunk>, S::BodyError>>> {
        let deadline = Instant::now() + self.settings.first_byte_timeout;
        let mut next_poll = Instant::now() + self.interval;
        loop {
            if !self.polling {
                return timeout_at(deadline, body.frame()).await.ok();
            }
            tokio::select! {
                frame = timeout_at(deadline, body.frame()) => return frame.ok(),
                () = sleep_until(next_poll) => {}
            }
            next_poll = Instant::now() + self.poll().await;
        }
    }

    /// The stream sent its first byte: it is open.
    fn accepted(&mut self) {
        Counters::add(&self.counters.connects, 1);
        metrics::counter!("herdsman_client_connects_total").increment(1);
        self.just_connected = true;
        if self.polling {
            self.polling = false;
            Counters::add(&self.counters.returns, 1);
            metrics::counter!("herdsman_client_returns_total").increment(1);
            tracing::info!("back to the event stream");
        } else {
            tracing::debug!("stream open");
        }
    }

    fn on_event(&mut self, event: Event) {
        self.failures = 0;
        let error = event.event_type() == "upstream-error";
        let id = Some(event.last_event_id())
            .filter(|id| !id.is_empty())
            .map(Arc::<str>::from);
        let data = hash(event.data());
        let first = std::mem::take(&mut self.just_connected);
        if first && !error && self.seen.has(id.as_deref(), data, false, Transport::Sse) {
            tracing::debug!(id = ?id, "skipped the value subscribers have");
            self.seen.transport = Some(Transport::Sse);
            return;
        }
        // A poll asks for what changed since this version; after an error
        // it asks for the whole answer, to see whether the value is fresh.
        self.etag = match id.as_deref() {
            Some(id) if !error => HeaderValue::from_str(&format!("\"{id}\"")).ok(),
            _ => None,
        };
        let update = Update {
            event_type: Arc::from(event.event_type()),
            data: Arc::from(event.into_data()),
            id,
            transport: Transport::Sse,
            stale: error,
            sequence: 0,
        };
        self.publish(update, (!error).then_some(data));
    }

    /// Hands `update` to the subscribers; `data` is its hash for a value
    /// (none for an error event, which leaves the value as it was).
    fn publish(&mut self, update: Update, data: Option<u64>) {
        let transport = update.transport;
        self.seen.transport = Some(transport);
        self.seen.stale = update.stale;
        if let (Some(id), Transport::Polling) = (update.id.as_deref(), transport) {
            id.clone_into(&mut self.resume);
        }
        if let Some(data) = data {
            self.seen.id = update.id.as_deref().map(str::to_owned);
            self.seen.hash = Some(data);
        }
        Counters::add(&self.counters.events, 1);
        metrics::counter!("herdsman_client_events_total", "transport" => transport.as_str())
            .increment(1);
        self.channel.publish(update);
    }

    /// Polls until `probe_at`, at the server's interval.
    async fn poll_until(&mut self, probe_at: Instant) {
        loop {
            let wait = self.poll().await;
            self.interval = wait;
            let next = Instant::now() + wait;
            if next >= probe_at {
                sleep_until(probe_at).await;
                return;
            }
            sleep_until(next).await;
        }
    }

    /// One poll; returns the wait before the next.
    async fn poll(&mut self) -> Duration {
        let Some(url) = self.poll_url.clone() else {
            return self.settings.probe_every;
        };
        Counters::add(&self.counters.polls, 1);
        metrics::counter!("herdsman_client_polls_total").increment(1);
        let mut req = Request::get(url);
        if let Some(tag) = &self.etag {
            req = req.header(header::IF_NONE_MATCH, tag.clone());
        }
        let req = req.body(Empty::new()).expect("a valid request");
        let limit = self.settings.max_event;
        let answer = timeout(self.settings.connect_timeout, async {
            let (parts, body) = self.call(req).await?.into_parts();
            let body = Limited::new(body, limit).collect().await?.to_bytes();
            Ok::<_, BoxError>((parts, body))
        })
        .await;
        let interval = self.parser.retry().unwrap_or(self.settings.poll_interval);
        let (parts, body) = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                tracing::info!(error = %err, "poll failed");
                return interval;
            }
            Err(_) => {
                tracing::info!("no polling answer in time");
                return interval;
            }
        };
        let interval = poll_interval(&parts.headers).unwrap_or(interval);
        Counters::add(&self.counters.bytes, body.len() as u64);
        metrics::counter!("herdsman_client_bytes_total", "transport" => "polling")
            .increment(body.len() as u64);
        match parts.status {
            StatusCode::NOT_MODIFIED => {}
            status if status.is_success() => self.on_poll(&parts.headers, body),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                return retry_after(&parts.headers).unwrap_or(interval);
            }
            status => tracing::info!(%status, "poll refused"),
        }
        interval
    }

    fn on_poll(&mut self, headers: &HeaderMap, body: bytes::Bytes) {
        let stale = headers.get("x-herdsman-stale").is_some_and(|v| v == "1");
        let etag = headers.get(header::ETAG).filter(|_| !stale);
        let id = etag.and_then(|tag| tag.to_str().ok()).map(etag_id);
        let data = String::from_utf8_lossy(&body);
        let hash = hash(&data);
        self.etag = etag.cloned();
        if self.seen.has(id, hash, stale, Transport::Polling) {
            self.seen.transport = Some(Transport::Polling);
            return;
        }
        let update = Update {
            event_type: Arc::from("message"),
            data: Arc::from(data.as_ref()),
            id: id.map(Arc::from),
            transport: Transport::Polling,
            stale,
            sequence: 0,
        };
        self.publish(update, Some(hash));
    }
}

/// An entity tag without `W/` and quotes: the version it names.
fn etag_id(tag: &str) -> &str {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(tag)
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// `Retry-After` in seconds (an HTTP date is read as no hint).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs))
}

/// herdsman-axum's `X-Poll-Interval`, in milliseconds.
fn poll_interval(headers: &HeaderMap) -> Option<Duration> {
    let ms: u64 = headers
        .get("x-poll-interval")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_their_weakness_and_quotes() {
        assert_eq!(etag_id("\"00ab\""), "00ab");
        assert_eq!(etag_id("W/\"00ab\""), "00ab");
        assert_eq!(etag_id("bare"), "bare");
    }

    #[test]
    fn the_content_type_is_matched_without_parameters() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            h
        };
        assert!(is_event_stream(&with("text/event-stream")));
        assert!(is_event_stream(&with("Text/Event-Stream; charset=utf-8")));
        assert!(!is_event_stream(&with("application/json")));
        assert!(!is_event_stream(&HeaderMap::new()));
    }
}
