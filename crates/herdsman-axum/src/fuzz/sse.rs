//! The SSE encoder: [`SseMessage`] to the bytes of an event.
//!
//! Properties, for any data, event name, id and retry:
//!
//! - nothing panics: an event name or id that SSE cannot carry (CR, LF or
//!   NUL) is refused with [`InvalidSseField`], anything else is encoded;
//! - read back by the reference parser ([`event_stream`](super::event_stream)),
//!   the bytes are exactly one event with the data (line breaks as LF), the
//!   event name (`message` when none), the id and the retry in whole
//!   milliseconds: no data can end the event early, start another, or set
//!   a field.

use std::{convert::Infallible, pin::Pin, task::Context, time::Duration};

use arbitrary::Arbitrary;
use axum::response::{sse::Event, IntoResponse, Sse};
use futures_core::Stream;

use super::event_stream::parse;
use crate::sse::{InvalidSseField, SseMessage};

/// One message and how it is sent.
#[derive(Debug, Arbitrary)]
pub struct Input {
    data: Vec<Piece>,
    event: Option<Vec<Piece>>,
    id: Option<Vec<Piece>>,
    retry: Option<u64>,
}

/// Text that tries to break out of its field.
#[derive(Debug, Arbitrary)]
enum Piece {
    Text(String),
    Cr,
    Lf,
    CrLf,
    Nul,
    Bom,
    Field,
    Space,
    Colon,
}

fn text(pieces: &[Piece]) -> String {
    let mut text = String::new();
    for piece in pieces {
        text.push_str(match piece {
            Piece::Text(t) => t,
            Piece::Cr => "\r",
            Piece::Lf => "\n",
            Piece::CrLf => "\r\n",
            Piece::Nul => "\0",
            Piece::Bom => "\u{feff}",
            Piece::Field => "\n\nevent: forged\nid: forged\ndata: forged\n\n",
            Piece::Space => " ",
            Piece::Colon => ":",
        });
    }
    text
}

/// The bytes axum sends for `event`.
pub fn render(event: Event) -> String {
    let stream = tokio_stream::iter([Ok::<_, Infallible>(event)]);
    let mut body = Sse::new(stream)
        .into_response()
        .into_body()
        .into_data_stream();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut bytes = Vec::new();
    while let std::task::Poll::Ready(Some(chunk)) = Pin::new(&mut body).poll_next(&mut cx) {
        bytes.extend_from_slice(&chunk.expect("an SSE body does not fail"));
    }
    String::from_utf8(bytes).expect("an event is UTF-8")
}

/// The bytes of an endless event stream's body (an [`sse()`](crate::sse())
/// response) sent within `within` of tokio time.
pub async fn render_stream(body: axum::body::Body, within: Duration) -> String {
    let mut stream = body.into_data_stream();
    let deadline = tokio::time::Instant::now() + within;
    let mut bytes = Vec::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx));
        match tokio::time::timeout_at(deadline, next).await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk.expect("an SSE body does not fail")),
            _ => break,
        }
    }
    String::from_utf8(bytes).expect("events are UTF-8")
}

/// Checks every property on `input`.
pub fn check(input: &Input) {
    let data = text(&input.data);
    let mut message = SseMessage::new(data.clone());
    let mut name = None;
    if let Some(event) = &input.event {
        let event = text(event);
        match SseMessage::new(data.clone()).with_event(event.clone()) {
            Ok(named) => {
                assert!(!event.contains(['\r', '\n', '\0']), "{event:?} accepted");
                message = named;
                name = Some(event);
            }
            Err(err) => {
                assert_eq!(err.field(), "event");
                assert!(event.contains(['\r', '\n', '\0']), "{event:?} refused");
            }
        }
    }
    let id = input.id.as_deref().map(text);
    let retry = input.retry.map(Duration::from_nanos);
    let event = match message.into_event(id.as_deref(), retry) {
        Ok(event) => event,
        Err(err) => {
            check_refused(&err, id.as_deref(), &data);
            return;
        }
    };
    assert!(id
        .as_deref()
        .is_none_or(|id| !id.contains(['\r', '\n', '\0'])));
    assert!(!data.is_empty(), "empty data encoded: browsers drop it");

    let bytes = render(event);
    let parsed = parse(&bytes);
    assert_eq!(parsed.events.len(), 1, "{bytes:?}");
    let event = &parsed.events[0];
    assert_eq!(event.data, data.replace("\r\n", "\n").replace('\r', "\n"));
    let kind = name.filter(|n| !n.is_empty()).unwrap_or("message".into());
    assert_eq!(event.kind, kind, "{bytes:?}");
    assert_eq!(event.last_event_id, id.unwrap_or_default(), "{bytes:?}");
    assert_eq!(
        parsed.retry,
        retry.map(|r| r.as_millis().try_into().unwrap_or(u64::MAX))
    );
    assert!(bytes.ends_with("\n\n"));
}

fn check_refused(err: &InvalidSseField, id: Option<&str>, data: &str) {
    match err.field() {
        "id" => assert!(
            id.is_some_and(|id| id.contains(['\r', '\n', '\0'])),
            "{id:?} refused"
        ),
        "data" => assert!(data.is_empty()),
        other => panic!("{other} refused"),
    }
}

/// Builds an [`Input`] from `data` and checks it.
pub fn run(data: &[u8]) {
    super::drive(data, check);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn encoded_events_read_back_as_sent_for_arbitrary_messages(
            data in prop::collection::vec(any::<u8>(), 0..1024),
        ) {
            run(&data);
        }
    }
}
