use http::{header, Response};

use super::{HttpBody, SharedBody};
use crate::share::Share;

/// Shares buffered HTTP responses (see [`BufferLayer`](super::BufferLayer)).
///
/// A response is shared when its body was buffered whole. It is given to its
/// own caller only, and the other callers make their own calls, when:
///
/// - its body is streaming (over the buffer limit, or an event stream);
/// - it carries `Set-Cookie`: cookies are set for one client, never for
///   everyone who asked at the same time.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpShare;

impl<B> Share<Response<HttpBody<B>>> for HttpShare {
    type Shared = Response<SharedBody>;

    fn share(
        &self,
        response: Response<HttpBody<B>>,
    ) -> Result<Self::Shared, Response<HttpBody<B>>> {
        if response.headers().contains_key(header::SET_COOKIE) {
            return Err(response);
        }
        share_buffered(response)
    }

    fn unshare(&self, shared: &Self::Shared) -> Response<HttpBody<B>> {
        unshare(shared)
    }

    fn unshare_owned(&self, shared: Self::Shared) -> Response<HttpBody<B>> {
        unshare_owned(shared)
    }

    fn held_bytes(&self, shared: &Self::Shared) -> usize {
        weigh(shared)
    }
}

/// The bytes a shared response holds: its inline size, each header and
/// trailer (name, value and about 32 bytes of map bookkeeping) and the body.
pub(crate) fn weigh(shared: &Response<SharedBody>) -> usize {
    let fields = |map: &http::HeaderMap| -> usize {
        map.iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum()
    };
    std::mem::size_of::<Response<SharedBody>>()
        + fields(shared.headers())
        + shared.body().trailers().map_or(0, fields)
        + shared.body().data().len()
}

/// Shares a response whose body was buffered whole.
// The `Err` is the caller's own response, handed straight back: boxing it
// would allocate for nothing.
#[allow(clippy::result_large_err)]
pub(crate) fn share_buffered<B>(
    response: Response<HttpBody<B>>,
) -> Result<Response<SharedBody>, Response<HttpBody<B>>> {
    if !response.body().is_buffered() {
        return Err(response);
    }
    let (parts, mut body) = response.into_parts();
    let shared = body.take_buffered().expect("checked buffered above");
    Ok(Response::from_parts(parts, shared))
}

/// A caller's response made of a copy it owns, moved: a cache hit has
/// cloned its copy out of the store already, and cloning its headers again
/// would cost two more allocations per hit.
pub(crate) fn unshare_owned<B>(shared: Response<SharedBody>) -> Response<HttpBody<B>> {
    let (parts, body) = shared.into_parts();
    Response::from_parts(parts, body.into_body())
}

/// One caller's copy of a shared response.
pub(crate) fn unshare<B>(shared: &Response<SharedBody>) -> Response<HttpBody<B>> {
    let mut response = Response::new(shared.body().to_body());
    *response.status_mut() = shared.status();
    *response.version_mut() = shared.version();
    *response.headers_mut() = shared.headers().clone();
    *response.extensions_mut() = shared.extensions().clone();
    response
}
