//! Server-Sent Events over a registry [`Subscription`].

use std::{
    convert::Infallible,
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{FromRequestParts, Query},
    http::{header, request::Parts, HeaderValue},
    response::{
        sse::{Event, KeepAlive},
        IntoResponse, Response, Sse,
    },
};
use futures_core::Stream;
use herdsman::registry::{Subscription, Update};
use serde::Deserialize;

/// How often an idle stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The longest `Last-Event-ID` accepted. The ids this crate sends are 16
/// characters ([`event_id`]).
const MAX_ID_LEN: usize = 64;

/// The `Last-Event-ID` a reconnecting client sent: the `Last-Event-ID`
/// header, or the `last_event_id` query parameter (for clients that cannot
/// set headers).
///
/// It is untrusted input: anything longer than 64 characters, or with a
/// character outside ASCII letters, digits, `-`, `_`, `.` and `:`, is
/// ignored. An id is only ever compared with the id of the current value
/// ([`event_id`]): an id from another process or an older release, a
/// forged one or garbage simply does not match, and the client gets the
/// current value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastEventId(pub Option<String>);

impl LastEventId {
    /// Parses one untrusted value.
    pub fn parse(value: &str) -> Option<String> {
        let value = value.trim();
        let token = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if value.is_empty() || value.len() > MAX_ID_LEN || !value.bytes().all(token) {
            return None;
        }
        Some(value.to_owned())
    }
}

/// The SSE id of an update's value: its [fingerprint](Update::fingerprint)
/// as 16 lowercase hexadecimal digits.
///
/// Equal ids mean equal content, in any process and after any restart of
/// the key's poll loop, when the registry's fingerprint is stable across
/// processes (HTTP registries' are); with a per-process fingerprint
/// (`HashFingerprint`) they hold within one process.
pub fn event_id<T>(update: &Update<T>) -> String {
    crate::poll::hex_id(update.fingerprint())
}

#[derive(Deserialize)]
struct IdQuery {
    last_event_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for LastEventId {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        if let Some(value) = parts.headers.get("last-event-id") {
            return Ok(LastEventId(
                value.to_str().ok().and_then(LastEventId::parse),
            ));
        }
        let query = Query::<IdQuery>::from_request_parts(parts, state).await;
        Ok(LastEventId(
            query
                .ok()
                .and_then(|q| q.0.last_event_id)
                .as_deref()
                .and_then(LastEventId::parse),
        ))
    }
}

/// A field value that SSE cannot carry: CR or LF in an event name or id
/// would end the field and let the rest be read as other fields; empty
/// data makes no event at all (a browser dispatches none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSseField {
    field: &'static str,
}

impl InvalidSseField {
    /// The field: `event`, `id` or `data`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidSseField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field == "data" {
            f.write_str("SSE `data` is empty, and a browser dispatches no event for it")
        } else {
            write!(f, "SSE `{}` field contains CR or LF", self.field)
        }
    }
}

impl std::error::Error for InvalidSseField {}

/// One SSE message: data, and optionally an event name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseMessage {
    event: Option<String>,
    data: String,
}

impl SseMessage {
    /// A `message` event carrying `data`. Line breaks (LF, CR or CRLF) in
    /// `data` split it into several `data:` lines, which a browser joins
    /// with LF, as the WHATWG rules say. Empty `data` cannot be sent (no
    /// event would reach the client, only its id):
    /// [`into_event`](Self::into_event) refuses it.
    pub fn new(data: impl Into<String>) -> Self {
        SseMessage {
            event: None,
            data: data.into(),
        }
    }

    /// Names the event (`event:`): browsers dispatch it to listeners of that
    /// name instead of `message`. Rejects CR and LF.
    pub fn with_event(mut self, event: impl Into<String>) -> Result<Self, InvalidSseField> {
        let event = event.into();
        check_field("event", &event)?;
        self.event = Some(event);
        Ok(self)
    }

    /// Encodes with `id` (none for an event that must not move the
    /// client's last event id, such as an error) and, for the first event
    /// of a stream, `retry`. Refuses an id with CR, LF or NUL, and empty
    /// data: axum writes no `data:` line for it, and a browser then
    /// dispatches nothing while still taking the id as the last one it has,
    /// so it would never ask for that value again.
    pub fn into_event(
        self,
        id: Option<&str>,
        retry: Option<Duration>,
    ) -> Result<Event, InvalidSseField> {
        if self.data.is_empty() {
            return Err(InvalidSseField { field: "data" });
        }
        // axum splits data on CR and on LF, but CRLF would give an empty
        // line between; every line break becomes LF first.
        let data = self.data.replace("\r\n", "\n").replace('\r', "\n");
        let mut event = Event::default().data(data);
        if let Some(id) = id {
            check_field("id", id)?;
            event = event.id(id);
        }
        if let Some(name) = self.event {
            event = event.event(name);
        }
        if let Some(retry) = retry {
            event = event.retry(retry);
        }
        Ok(event)
    }
}

fn check_field(field: &'static str, value: &str) -> Result<(), InvalidSseField> {
    if value.contains(['\r', '\n', '\0']) {
        Err(InvalidSseField { field })
    } else {
        Ok(())
    }
}

/// Turns each update into a message, or `None` to send nothing for it.
///
/// `subscription` is the stream's own: its
/// [`next_attempt`](Subscription::next_attempt) tells an error event when
/// the key is polled again.
pub trait Encode<T: Send + Sync + 'static> {
    /// The message for one update.
    fn encode(&mut self, update: &Update<T>, subscription: &Subscription<T>) -> Option<SseMessage>;
}

impl<T, F> Encode<T> for F
where
    T: Send + Sync + 'static,
    F: FnMut(&Update<T>, &Subscription<T>) -> Option<SseMessage>,
{
    fn encode(&mut self, update: &Update<T>, subscription: &Subscription<T>) -> Option<SseMessage> {
        self(update, subscription)
    }
}

/// What ends a stream of [`sse`]: a future that resolves to the stream's
/// last event, or to `None` to end it without one.
pub type Until = Pin<Box<dyn Future<Output = Option<Event>> + Send>>;

/// The event stream of [`sse`]: one event per change of the value (`id:`
/// its [`event_id`]), an error event per failure (no `id:`), `retry:` the
/// poll interval on the first event.
pub struct UpdateEvents<T: Send + Sync + 'static, E> {
    subscription: Subscription<T>,
    until: Option<Until>,
    /// `until` resolved: the stream has ended (after its last event).
    ended: bool,
    encode: E,
    /// The id of the last value the client has: its `Last-Event-ID`, then
    /// that of each value sent.
    has: Option<String>,
    /// An error event was sent since the client got that value.
    failing: bool,
    /// An event made with the one before, sent next.
    pending: Option<Event>,
    first: bool,
    _guard: Option<Box<dyn Send + Sync>>,
}

impl<T: Send + Sync + 'static, E> fmt::Debug for UpdateEvents<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateEvents")
            .field("subscription", &self.subscription)
            .field("has", &self.has)
            .field("failing", &self.failing)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static, E: Encode<T>> UpdateEvents<T, E> {
    /// The event for `update`, with `id` (none for an error).
    fn event(&mut self, update: &Update<T>, id: Option<&str>) -> Option<Event> {
        let message = self.encode.encode(update, &self.subscription)?;
        let retry = self.first.then(|| self.subscription.interval());
        match message.into_event(id, retry) {
            Ok(event) => {
                self.first = false;
                Some(event)
            }
            Err(err) => {
                tracing::warn!(error = %err, "herdsman: SSE message dropped");
                None
            }
        }
    }

    /// The value event for a good update, unless the client has it and has
    /// not been told of a failure since.
    fn value(&mut self, good: &Update<T>) -> Option<Event> {
        let id = event_id(good);
        if self.has.as_deref() == Some(id.as_str()) && !self.failing {
            return None;
        }
        let event = self.event(good, Some(&id))?;
        self.has = Some(id);
        self.failing = false;
        Some(event)
    }

    /// For a failed update: its good value first if the client does not
    /// have it, then the error event.
    fn failure(&mut self, update: &Update<T>) -> (Option<Event>, Option<Event>) {
        let value = match update.good() {
            Some(good) if self.has.as_deref() != Some(event_id(good).as_str()) => self.value(good),
            _ => None,
        };
        let error = self.event(update, None);
        if error.is_some() {
            self.failing = true;
        }
        (value, error)
    }
}

impl<T: Send + Sync + 'static, E: Encode<T> + Unpin> Stream for UpdateEvents<T, E> {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if let Some(until) = &mut this.until {
            if let Poll::Ready(last) = until.as_mut().poll(cx) {
                this.ended = true;
                return Poll::Ready(last.map(Ok));
            }
        }
        if let Some(event) = this.pending.take() {
            return Poll::Ready(Some(Ok(event)));
        }
        loop {
            let Some(update) = std::task::ready!(Pin::new(&mut this.subscription).poll_next(cx))
            else {
                return Poll::Ready(None);
            };
            let (first, second) = if update.value().is_some() {
                (this.value(&update), None)
            } else {
                this.failure(&update)
            };
            match (first, second) {
                (Some(event), next) => {
                    this.pending = next;
                    return Poll::Ready(Some(Ok(event)));
                }
                (None, Some(event)) => return Poll::Ready(Some(Ok(event))),
                (None, None) => {}
            }
        }
    }
}

/// An SSE response over `subscription`.
///
/// Each update the subscription yields (the current value first, then each
/// change) becomes an event through `encode`:
///
/// - a good value: `id:` its [`event_id`] (the same content has the same id
///   in any process), unless the client already has that value: when
///   `last_event_id` is the current value's id, the initial event is
///   skipped; any other id (another process's, an old one, garbage) gets
///   the current value;
/// - a failed poll: the error event, with **no** `id:`, so that the
///   client's last event id stays that of its last value; it is preceded by
///   the good value ([`Update::good`]: the last successful one or a cache's
///   stale copy) when the client does not have it. After a failure the next
///   good value is sent even if its id did not change, so the client learns
///   that the key recovered.
///
/// The first event carries `retry:` the key's poll interval. An idle stream
/// sends a keep-alive comment every `keep_alive` ([`KEEP_ALIVE`] is the
/// usual 15 s). The response carries `Cache-Control: no-store` and
/// `X-Accel-Buffering: no` (nginx then passes each event on at once,
/// whatever its `proxy_buffering`).
///
/// `guard` is held for the stream's life (a per-caller stream permit, say);
/// the stream ends when `until` resolves (the SSE switch turned off, say),
/// after the event it resolves to, if any (a server's shutdown notice).
pub fn sse<T, E>(
    subscription: Subscription<T>,
    last_event_id: LastEventId,
    encode: E,
    guard: Option<Box<dyn Send + Sync>>,
    until: Option<Until>,
    keep_alive: Duration,
) -> Response
where
    T: Send + Sync + 'static,
    E: Encode<T> + Send + Unpin + 'static,
{
    let events = UpdateEvents {
        subscription,
        until,
        ended: false,
        encode,
        has: last_event_id.0,
        failing: false,
        pending: None,
        first: true,
        _guard: guard,
    };
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_accepts_only_short_plain_tokens() {
        assert_eq!(
            LastEventId::parse("00c0ffee00c0ffee").as_deref(),
            Some("00c0ffee00c0ffee")
        );
        assert_eq!(LastEventId::parse(" 7 ").as_deref(), Some("7"));
        assert_eq!(
            LastEventId::parse("a-b_c.d:e").as_deref(),
            Some("a-b_c.d:e")
        );
        let long = "f".repeat(MAX_ID_LEN + 1);
        for bad in [
            "",
            " ",
            "1\n2",
            "1; event: x",
            "i\rd",
            "\"1\"",
            "é",
            long.as_str(),
        ] {
            assert_eq!(LastEventId::parse(bad), None, "{bad:?}");
        }
    }

    async fn render(event: Event) -> String {
        use http_body_util::BodyExt;
        let stream = tokio_stream::iter([Ok::<_, Infallible>(event)]);
        let body = Sse::new(stream).into_response().into_body();
        let bytes = body.collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn data_with_line_breaks_is_split_into_data_lines() {
        let event = SseMessage::new("a\r\nb\nc\rd")
            .with_event("update")
            .unwrap()
            .into_event(Some("7"), Some(Duration::from_millis(2500)))
            .unwrap();
        let text = render(event).await;
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "",
                "data: a",
                "data: b",
                "data: c",
                "data: d",
                "event: update",
                "id: 7",
                "retry: 2500"
            ],
            "{text:?}"
        );
        assert!(text.ends_with("\n\n"), "one blank line ends the event");
    }

    #[test]
    fn event_names_and_ids_with_line_breaks_are_rejected() {
        assert!(SseMessage::new("x").with_event("a\nb").is_err());
        assert!(SseMessage::new("x").with_event("a\rb").is_err());
        assert!(SseMessage::new("x").into_event(Some("1\n2"), None).is_err());
        assert!(SseMessage::new("x").with_event("update").is_ok());
    }

    #[test]
    fn an_empty_message_is_refused_since_browsers_dispatch_no_event_for_it() {
        let err = SseMessage::new("").into_event(Some("7"), None).unwrap_err();
        assert_eq!(err.field(), "data");
        assert!(SseMessage::new("\n").into_event(Some("7"), None).is_ok());
    }

    #[tokio::test]
    async fn an_event_without_an_id_has_no_id_field() {
        let event = SseMessage::new("{}")
            .with_event("upstream-error")
            .unwrap()
            .into_event(None, None)
            .unwrap();
        let text = render(event).await;
        assert!(!text.contains("id:"), "{text:?}");
        assert!(text.contains("event: upstream-error"), "{text:?}");
    }
}
