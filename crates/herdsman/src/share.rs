//! How one response is handed to many callers.
//!
//! Dedup (and, later, the cache and the registry) give one result to many
//! callers. A [`Share`] policy turns a response into a cheaply clonable form
//! and back. [`CloneShare`], the default, requires `Response: Clone`;
//! [`HttpShare`][crate::http::HttpShare] shares buffered HTTP responses and
//! refuses to share what must reach one caller only (an oversized streamed
//! body, a `Set-Cookie`). A refused response goes to its own caller; the other
//! callers then make their own, uncoordinated calls, so nothing fails or is
//! truncated.
//!
#![cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::HttpShare]: crate#feature-flags"
)]

/// A policy for handing one response of type `T` to many callers.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot share responses of type `{T}`",
    note = "for HTTP services put `herdsman::http::BufferLayer` below the coordinating layer, so responses are `Response<HttpBody<B>>`"
)]
pub trait Share<T> {
    /// The form in which one response is held for many callers.
    type Shared: Clone + Send + Sync + 'static;

    /// Makes `value` shareable, or gives it back when it must reach its own
    /// caller only.
    fn share(&self, value: T) -> Result<Self::Shared, T>;

    /// Makes one caller's copy of a shared response.
    fn unshare(&self, shared: &Self::Shared) -> T;

    /// Turns a copy of the shared form that the caller already owns into its
    /// response. The default clones via [`unshare`](Share::unshare); policies
    /// whose shared form *is* the response move it instead.
    fn unshare_owned(&self, shared: Self::Shared) -> T {
        self.unshare(&shared)
    }

    /// The bytes one shared response holds, for the memory figures of the
    /// layers that keep one (the Registry's loop values, Dedup's reuse
    /// window, the cache's default weight). The default is the value's
    /// inline size, which undercounts values that own heap memory;
    /// [`HttpShare`][crate::http::HttpShare] counts headers and body.
    ///
    #[cfg_attr(
        not(feature = "http"),
        doc = "[crate::http::HttpShare]: crate#feature-flags"
    )]
    fn held_bytes(&self, _shared: &Self::Shared) -> usize {
        std::mem::size_of::<Self::Shared>()
    }
}

/// Shares any `Clone` response by cloning it.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneShare;

impl<T> Share<T> for CloneShare
where
    T: Clone + Send + Sync + 'static,
{
    type Shared = T;

    fn share(&self, value: T) -> Result<T, T> {
        Ok(value)
    }

    fn unshare(&self, shared: &T) -> T {
        shared.clone()
    }

    fn unshare_owned(&self, shared: T) -> T {
        shared
    }
}
