use std::{
    collections::VecDeque,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// The body of a response that went through [`BufferLayer`](super::BufferLayer).
///
/// Either *buffered* (the whole body, and its trailers, in memory: it can be
/// shared) or *streaming* (the body was larger than the limit, or was not to be
/// buffered: what was read so far, then the rest of the original body).
pub struct HttpBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    Full {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
    Streaming {
        prefix: VecDeque<Bytes>,
        body: Pin<Box<B>>,
    },
}

impl<B> HttpBody<B> {
    /// A buffered body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        Self::buffered(data.into(), None)
    }

    pub(crate) fn buffered(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        HttpBody {
            kind: Kind::Full {
                data: Some(data),
                trailers,
            },
        }
    }

    /// A body streamed from `body`, uncoordinated.
    pub fn streaming(body: B) -> Self {
        Self::partial_pinned(VecDeque::new(), Box::pin(body))
    }

    pub(crate) fn partial_pinned(prefix: VecDeque<Bytes>, body: Pin<Box<B>>) -> Self {
        HttpBody {
            kind: Kind::Streaming { prefix, body },
        }
    }

    /// Whether the whole body is in memory (and so can be shared).
    pub fn is_buffered(&self) -> bool {
        matches!(self.kind, Kind::Full { .. })
    }

    pub(crate) fn take_buffered(&mut self) -> Option<SharedBody> {
        match &mut self.kind {
            Kind::Full { data, trailers } => Some(SharedBody {
                data: data.take().unwrap_or_default(),
                trailers: trailers.take(),
            }),
            Kind::Streaming { .. } => None,
        }
    }
}

impl<B> Body for HttpBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full { data, trailers } => {
                if let Some(data) = data.take().filter(|d| !d.is_empty()) {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
            Kind::Streaming { prefix, body } => {
                if let Some(chunk) = prefix.pop_front() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                body.as_mut().poll_frame(cx).map(|frame| {
                    frame.map(|frame| {
                        frame.map(|frame| frame.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                    })
                })
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data, trailers } => {
                data.as_ref().is_none_or(Bytes::is_empty) && trailers.is_none()
            }
            Kind::Streaming { prefix, body } => prefix.is_empty() && body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Streaming { prefix, body } => {
                let buffered: u64 = prefix.iter().map(|c| c.len() as u64).sum();
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

impl<B> fmt::Debug for HttpBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full { data, trailers } => f
                .debug_struct("HttpBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .field("trailers", &trailers.is_some())
                .finish(),
            Kind::Streaming { prefix, .. } => f
                .debug_struct("HttpBody::Streaming")
                .field("buffered_chunks", &prefix.len())
                .finish_non_exhaustive(),
        }
    }
}

/// A buffered body held for many callers: the data and the trailers.
#[derive(Debug, Clone, Default)]
pub struct SharedBody {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl SharedBody {
    /// A body of `data` then `trailers`, as a buffered response's: for a
    /// store that rebuilds shared responses from their bytes (a cache
    /// kept outside this process).
    pub fn new(data: Bytes, trailers: Option<HeaderMap>) -> Self {
        SharedBody { data, trailers }
    }

    /// The body's bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The body's trailers, if it had any.
    pub fn trailers(&self) -> Option<&HeaderMap> {
        self.trailers.as_ref()
    }

    pub(crate) fn to_body<B>(&self) -> HttpBody<B> {
        HttpBody::buffered(self.data.clone(), self.trailers.clone())
    }

    /// A caller's body made of this one, moved.
    pub(crate) fn into_body<B>(self) -> HttpBody<B> {
        HttpBody::buffered(self.data, self.trailers)
    }
}
