//! Consume herdsman's live endpoints (and any Server-Sent Events endpoint)
//! from Rust.
//!
//! - [`event_stream`]: an incremental parser of `text/event-stream`, as
//!   WHATWG HTML §9.2 says, with bounded memory.
//! - [`Client`]: subscriptions to event streams, with reconnection, a
//!   polling fallback, and one connection per URL however many
//!   subscribers.

mod backoff;
mod client;
mod driver;
pub mod event_stream;
mod update;

pub use crate::{
    client::{Builder, Client, ClientRequest, ClientStats, HttpClient, HttpService, InvalidUrl},
    update::{Lagged, Subscription, Transport, Update},
};

/// The boxed error of tower services.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
