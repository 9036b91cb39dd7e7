//! The ways a client can run out of time.

use std::fmt;

/// A client did not send a whole request head within the header-read
/// timeout; its connection was closed without an answer.
///
/// Returned by [`Server::serve_connection`](super::Server::serve_connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HeaderTimeout;

impl fmt::Display for HeaderTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client did not send a request head in time")
    }
}

impl std::error::Error for HeaderTimeout {}

/// A client did not send a whole request body within the body-read
/// timeout.
///
/// It is the error a handler gets from the request body; the server then
/// answers `408 Request Timeout` in place of the handler's response, and
/// closes an HTTP/1 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BodyTimeout;

impl fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the client did not send the request body in time")
    }
}

impl std::error::Error for BodyTimeout {}
