//! `Last-Event-ID`: untrusted bytes from a reconnecting client, in the
//! header or the `last_event_id` query parameter.
//!
//! Properties, for any bytes:
//!
//! - reading it never panics and never fails the request; what is kept is
//!   a short plain token or nothing ([`LastEventId`]);
//! - over a registry key with a value, the stream skips the initial event
//!   exactly when the id is the current value's id (whitespace around it
//!   aside); any other id (garbage, another value's, too long) gets the
//!   current value, with its id, as the first event.

use std::{convert::Infallible, time::Duration};

use arbitrary::Arbitrary;
use axum::{
    extract::FromRequestParts,
    http::{HeaderValue, Request},
};
use futures_core::Stream;
use herdsman::{
    key::Key,
    registry::{RegistryLayer, Subscription, Update},
};
use tower::{service_fn, Layer};

use super::{event_stream::parse, sse::render_stream};
use crate::sse::{event_id, sse, LastEventId, SseMessage, KEEP_ALIVE};

/// What the client claims to have, and the key's value.
#[derive(Debug, Arbitrary)]
pub struct Input {
    value: String,
    claim: Claim,
    in_query: bool,
}

#[derive(Debug, Arbitrary)]
enum Claim {
    /// The current value's id, padded.
    Current {
        before: u8,
        after: u8,
    },
    /// The current value's id with one byte changed.
    Near {
        at: u8,
        to: u8,
    },
    Bytes(Vec<u8>),
}

async fn next<S: Stream + Unpin>(stream: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

/// Checks every property on `input`.
pub fn check(input: &Input) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(scenario(input));
}

async fn scenario(input: &Input) {
    let value = input.value.clone();
    let upstream = service_fn(move |(): ()| {
        let value = value.clone();
        async move { Ok::<_, Infallible>(value) }
    });
    let registry = RegistryLayer::new(|_: &()| Some(Key::from("k")))
        .with_jitter(0.0)
        .with_interval(Duration::from_secs(3600))
        .layer(upstream);
    let mut first: Subscription<String> = registry.subscribe(()).expect("one subscriber");
    let update = next(&mut first).await.expect("the first value");
    let current = event_id(&update);

    let claim: Vec<u8> = match &input.claim {
        Claim::Current { before, after } => {
            let pad = |n: u8| " \t".repeat(usize::from(n % 3));
            format!("{}{current}{}", pad(*before), pad(*after)).into_bytes()
        }
        Claim::Near { at, to } => {
            let mut bytes = current.clone().into_bytes();
            let at = usize::from(*at) % bytes.len();
            bytes[at] = *to;
            bytes
        }
        Claim::Bytes(bytes) => bytes.clone(),
    };
    let mut builder = Request::get("/events");
    if input.in_query {
        let mut query = String::from("/events?last_event_id=");
        for b in &claim {
            query.push_str(&format!("%{b:02X}"));
        }
        builder = Request::get(query);
    } else if let Ok(header) = HeaderValue::from_bytes(&claim) {
        builder = builder.header("last-event-id", header);
    } else {
        return;
    }
    let mut parts = builder.body(()).expect("a request").into_parts().0;
    let Ok(last) = LastEventId::from_request_parts(&mut parts, &()).await;
    if let Some(id) = &last.0 {
        assert!(!id.is_empty() && id.len() <= 64, "{id:?}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)));
    }
    let current_claimed = std::str::from_utf8(&claim).is_ok_and(|c| c.trim() == current);

    let subscription = registry.subscribe(()).expect("a second subscriber");
    let encode = |update: &Update<String>, _: &Subscription<String>| {
        update.value().map(|v| SseMessage::new(format!("[{v}]")))
    };
    let response = sse(subscription, last, encode, None, None, KEEP_ALIVE);
    let text = render_stream(response.into_body(), KEEP_ALIVE / 2).await;
    let events = parse(&text).events;
    if current_claimed {
        assert!(events.is_empty(), "sent again: {text:?}");
    } else {
        assert_eq!(events.len(), 1, "{text:?}");
        assert_eq!(
            events[0].data,
            format!("[{}]", input.value)
                .replace("\r\n", "\n")
                .replace('\r', "\n")
        );
        assert_eq!(events[0].last_event_id, current);
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
        fn only_the_current_values_id_skips_the_initial_event(
            data in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            run(&data);
        }
    }
}
