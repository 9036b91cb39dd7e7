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

/// The longest `Last-Event-ID` accepted: a version is a `u64`, at most 20
/// digits.
const MAX_ID_LEN: usize = 20;

/// The `Last-Event-ID` a reconnecting client sent: the `Last-Event-ID`
/// header, or the `last_event_id` query parameter (for clients that cannot
/// set headers).
///
/// It is untrusted input: anything but a plain decimal version (at most 20
/// digits) is ignored, and a version the stream has never produced simply
/// does not match, so the client gets the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastEventId(pub Option<u64>);

impl LastEventId {
    /// Parses one untrusted value.
    pub fn parse(value: &str) -> Option<u64> {
        let value = value.trim();
        if value.is_empty()
            || value.len() > MAX_ID_LEN
            || !value.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        value.parse().ok()
    }
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
/// would end the field and let the rest be read as other fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSseField {
    field: &'static str,
}

impl InvalidSseField {
    /// The field: `event` or `id`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for InvalidSseField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SSE `{}` field contains CR or LF", self.field)
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
    /// with LF, as the WHATWG rules say.
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

    /// Encodes with `id` and, for the first event of a stream, `retry`.
    pub fn into_event(self, id: &str, retry: Option<Duration>) -> Result<Event, InvalidSseField> {
        check_field("id", id)?;
        // axum splits data on CR and on LF, but CRLF would give an empty
        // line between; every line break becomes LF first.
        let data = self.data.replace("\r\n", "\n").replace('\r', "\n");
        let mut event = Event::default().id(id).data(data);
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
pub trait Encode<T> {
    /// The message for one update.
    fn encode(&mut self, update: &Update<T>) -> Option<SseMessage>;
}

impl<T, F> Encode<T> for F
where
    F: FnMut(&Update<T>) -> Option<SseMessage>,
{
    fn encode(&mut self, update: &Update<T>) -> Option<SseMessage> {
        self(update)
    }
}

/// The event stream of [`sse`]: one event per update, `id:` the version,
/// `retry:` the poll interval on the first event.
pub struct UpdateEvents<T: Send + Sync + 'static, E> {
    subscription: Subscription<T>,
    until: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    encode: E,
    skip: Option<u64>,
    first: bool,
    _guard: Option<Box<dyn Send + Sync>>,
}

impl<T: Send + Sync + 'static, E> fmt::Debug for UpdateEvents<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateEvents")
            .field("subscription", &self.subscription)
            .finish_non_exhaustive()
    }
}

impl<T: Send + Sync + 'static, E: Encode<T> + Unpin> Stream for UpdateEvents<T, E> {
    type Item = Result<Event, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(until) = &mut this.until {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        loop {
            let Some(update) = std::task::ready!(Pin::new(&mut this.subscription).poll_next(cx))
            else {
                return Poll::Ready(None);
            };
            // The client already has this version: skip it once.
            if this.skip.take() == Some(update.version()) {
                continue;
            }
            let Some(message) = this.encode.encode(&update) else {
                continue;
            };
            let retry = std::mem::take(&mut this.first).then(|| this.subscription.interval());
            match message.into_event(&update.version().to_string(), retry) {
                Ok(event) => return Poll::Ready(Some(Ok(event))),
                Err(err) => {
                    tracing::warn!(error = %err, "herdsman: SSE message dropped");
                }
            }
        }
    }
}

/// An SSE response over `subscription`.
///
/// Each update the subscription yields (the current value first, then each
/// change) becomes one event through `encode`, with `id:` its version and,
/// on the first event, `retry:` the key's poll interval. An idle stream
/// sends a keep-alive comment every `keep_alive`. When `last_event_id` is the
/// current version the client is current and the initial event is skipped.
/// The response carries `Cache-Control: no-store`.
///
/// `guard` is held for the stream's life (a per-caller stream permit, say);
/// the stream ends when `until` resolves (the SSE switch turned off, say).
/// `keep_alive` is the idle time before a keep-alive comment
/// ([`KEEP_ALIVE`] is the usual 15 s).
pub fn sse<T, E>(
    subscription: Subscription<T>,
    last_event_id: LastEventId,
    encode: E,
    guard: Option<Box<dyn Send + Sync>>,
    until: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    keep_alive: Duration,
) -> Response
where
    T: Send + Sync + 'static,
    E: Encode<T> + Send + Unpin + 'static,
{
    let events = UpdateEvents {
        subscription,
        until,
        encode,
        skip: last_event_id.0,
        first: true,
        _guard: guard,
    };
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_accepts_only_plain_versions() {
        assert_eq!(LastEventId::parse("42"), Some(42));
        assert_eq!(LastEventId::parse(" 7 "), Some(7));
        for bad in [
            "",
            "-1",
            "4x",
            "1e3",
            "0x10",
            "99999999999999999999999",
            "1\n2",
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
            .into_event("7", Some(Duration::from_millis(2500)))
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
        assert!(SseMessage::new("x").into_event("1\n2", None).is_err());
        assert!(SseMessage::new("x").with_event("update").is_ok());
    }
}
