//! What subscribers receive.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_core::Stream;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use crate::client::Entry;

/// How an update arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// An event of the Server-Sent Events stream.
    Sse,
    /// A polling answer (the stream had failed; see
    /// [`Client`](crate::Client)'s fallback).
    Polling,
}

impl Transport {
    /// `"sse"` or `"polling"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Polling => "polling",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of a live resource, shared by every subscriber of its URL
/// (cloning is cheap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub(crate) data: Arc<str>,
    pub(crate) event_type: Arc<str>,
    pub(crate) id: Option<Arc<str>>,
    pub(crate) transport: Transport,
    pub(crate) stale: bool,
    pub(crate) sequence: u64,
}

impl Update {
    /// The change's number among the URL's updates on its shared
    /// connection: 1, 2, ... Every subscriber sees the same number for
    /// the same change; a late subscriber's first update keeps the number
    /// of the change it is.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The data: an event's data, or a polling answer's body (as UTF-8,
    /// invalid sequences replaced).
    pub fn data(&self) -> &str {
        &self.data
    }

    /// The event type: `message` unless the server named it (herdsman's
    /// servers send `upstream-error` when a poll of the resource failed).
    /// Always `message` for a polling answer.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The version: the event's last event id (as a browser's
    /// `MessageEvent.lastEventId`), or a polling answer's `ETag` without
    /// its quotes. herdsman-axum gives both the same value for the same
    /// content, which is how a switch of transport shows no duplicate.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// How it arrived.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the server says the value is stale: a polling answer marked
    /// `X-Herdsman-Stale: 1` (the last good value while the upstream
    /// fails), or an `upstream-error` event.
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}

/// A subscriber fell behind: `skipped` updates were dropped for it (the
/// [`Builder::with_capacity`](crate::Builder::with_capacity) newest are
/// kept), and the next item is the oldest one kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lagged {
    /// How many updates this subscriber missed.
    pub skipped: u64,
}

impl fmt::Display for Lagged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber lagged: {} updates skipped", self.skipped)
    }
}

impl std::error::Error for Lagged {}

/// One subscriber's updates of a URL ([`Client::subscribe`](crate::Client::subscribe)):
/// the current value first (when the shared connection has one), then
/// each change. It ends when the server stops the stream (HTTP 204).
/// Dropping the last subscription of a URL closes its connection.
pub struct Subscription {
    pub(crate) first: Option<Update>,
    pub(crate) updates: BroadcastStream<Update>,
    pub(crate) entry: Arc<Entry>,
}

impl Subscription {
    /// The URL subscribed to.
    pub fn url(&self) -> &str {
        self.entry.url()
    }

    /// How many subscriptions share this one's connection now.
    pub fn subscribers(&self) -> usize {
        Arc::strong_count(&self.entry)
    }
}

impl Subscription {
    /// The next update: [`Stream::poll_next`] as an `async fn`, for
    /// callers without a stream combinator crate.
    pub async fn recv(&mut self) -> Option<Result<Update, Lagged>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }
}

impl Stream for Subscription {
    type Item = Result<Update, Lagged>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut this.updates).poll_next(cx).map(|item| {
            item.map(|r| r.map_err(|BroadcastStreamRecvError::Lagged(skipped)| Lagged { skipped }))
        })
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("url", &self.url())
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}
