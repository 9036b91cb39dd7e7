//! What the stack found about a request, carried with its body.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use http::{header, HeaderMap, Request};
use tower_service::Service;

use super::route::ClassRoute;
use crate::key::{Key, KeyFn};

/// A request body inside a [`Coordinator`](super::Coordinator)'s stack: the
/// caller's body, and what [`Classified`](super::Classified) found about
/// the request on the way in (its class's route and its key), which every
/// layer below reads ([`ClassOf`](super::ClassOf),
/// [`ClassKey`](super::ClassKey)) instead of classifying and keying the
/// request again.
///
/// They travel with the body, not in the request's extensions, because a
/// first insertion into a request's extensions costs three allocations (the
/// map's box, its table and the value's box) and a cache hit allocates
/// little else. [`Unrouted`] hands the inner service its caller's body
/// again.
pub struct Routed<B> {
    body: B,
    route: Option<Carry>,
}

/// What [`Routed`] carries.
struct Carry {
    route: Arc<ClassRoute>,
    key: Option<Key>,
    /// The request's header count when `key` was computed, if `key` is the
    /// request's (see [`Carry::key_of`]).
    headers: Option<usize>,
}

impl Carry {
    /// The carried key, if it is still the key of `req`.
    ///
    /// The only layer that changes a request below [`Classified`](super::Classified)
    /// is the cache, and it changes only its validators: it takes a
    /// caller's `If-None-Match` and `If-Modified-Since` off, and puts its
    /// own on to revalidate a stored response. So a key is carried only for
    /// a request without them (there is nothing to take off), and stays the
    /// request's while its header count is what it was (putting one on
    /// raises it). A request with validators is keyed by each layer that
    /// asks, as a request that carries nothing.
    #[inline]
    fn key_of<B>(&self, req: &Request<B>) -> Option<Option<&Key>> {
        (self.headers? == req.headers().len()).then_some(self.key.as_ref())
    }
}

impl<B> Routed<B> {
    /// `body`, carrying nothing: each layer classifies and keys the request
    /// itself.
    pub(crate) fn new(body: B) -> Self {
        Routed { body, route: None }
    }

    /// The caller's body.
    pub fn get_ref(&self) -> &B {
        &self.body
    }

    /// The caller's body, mutably.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// Unwraps the caller's body.
    pub fn into_inner(self) -> B {
        self.body
    }

    /// The route carried, if any.
    #[inline]
    pub(crate) fn route(&self) -> Option<&ClassRoute> {
        self.route.as_ref().map(|carry| &*carry.route)
    }

    /// The route carried, shared.
    pub(crate) fn route_arc(&self) -> Option<&Arc<ClassRoute>> {
        self.route.as_ref().map(|carry| &carry.route)
    }
}

/// Carries `route` in `req`'s body, and the key of `req` its route's key
/// function makes, unless the request has validators (see
/// [`Carry::key_of`]); returns the request.
pub(crate) fn carry<B>(req: Request<B>, route: Arc<ClassRoute>) -> Request<Routed<B>> {
    let (key, headers) = if has_validators(req.headers()) {
        (None, None)
    } else {
        (route.key.key(&req), Some(req.headers().len()))
    };
    let carry = Carry {
        route,
        key,
        headers,
    };
    req.map(|body| Routed {
        body,
        route: Some(carry),
    })
}

/// The key `req` carries, if it carries its own: `Some(None)` for a request
/// that is not keyed, `None` when it must be computed.
#[inline]
pub(crate) fn carried_key<B>(req: &Request<Routed<B>>) -> Option<Option<&Key>> {
    req.body().route.as_ref()?.key_of(req)
}

/// Whether a request has the validators the cache takes off or puts on.
#[inline]
fn has_validators(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE)
}

impl<B: Default> Default for Routed<B> {
    fn default() -> Self {
        Routed::new(B::default())
    }
}

impl<B: fmt::Debug> fmt::Debug for Routed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Routed")
            .field("body", &self.body)
            .field("class", &self.route().map(|route| &route.class))
            .finish_non_exhaustive()
    }
}

/// The innermost service of a [`Coordinator`](super::Coordinator)'s stack:
/// calls the inner service with the caller's body ([`Routed::into_inner`]).
#[derive(Clone, Debug)]
pub struct Unrouted<S> {
    inner: S,
}

impl<S> Unrouted<S> {
    pub(crate) fn new(inner: S) -> Self {
        Unrouted { inner }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, B> Service<Request<Routed<B>>> for Unrouted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<Routed<B>>) -> S::Future {
        self.inner.call(req.map(Routed::into_inner))
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::{
        config::{Config, Environment},
        coordinator::{route::Routes, ClassKey},
        switch::Switches,
    };

    fn routes() -> Arc<Routes> {
        let config = Config::profile(Environment::Test);
        Arc::new(Routes::new(&config, &Switches::from_config(&config)))
    }

    /// A key function that only computes (a request's route's key).
    fn computed<B>(routes: &Routes, req: &Request<B>) -> Option<Key> {
        routes.of_path(req.uri().path()).key.key(req)
    }

    fn get() -> Request<()> {
        Request::get("/users")
            .header("cookie", "session=alice")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_carried_key_is_read_until_a_header_is_put_on() {
        let routes = routes();
        let key = ClassKey::new(routes.clone());
        let mut req = carry(get(), routes.of_path("/users").clone());
        let carried = carried_key(&req).expect("carried").cloned();
        assert_eq!(carried, computed(&routes, &req));
        assert_eq!(key.key(&req), carried);

        // As the cache revalidates: the key changes, and so must the one
        // the layers below read.
        req.headers_mut()
            .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v2\""));
        assert_eq!(carried_key(&req), None, "no longer the request's");
        assert_eq!(key.key(&req), computed(&routes, &req));
        assert_ne!(key.key(&req), carried);
    }

    #[test]
    fn a_request_with_validators_carries_its_route_and_no_key() {
        let routes = routes();
        let key = ClassKey::new(routes.clone());
        let mut conditional = get();
        conditional
            .headers_mut()
            .insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"v1\""));
        let mut req = carry(conditional, routes.of_path("/users").clone());
        assert!(req.body().route().is_some());
        assert_eq!(carried_key(&req), None);
        assert_eq!(key.key(&req), computed(&routes, &req));

        // As the cache takes the caller's validators off: the header count
        // is back to a plain request's, and the key is still computed.
        req.headers_mut().remove(header::IF_NONE_MATCH);
        assert_eq!(carried_key(&req), None);
        assert_eq!(key.key(&req), computed(&routes, &get()));
    }

    #[test]
    fn routed_bodies_and_unrouted_services_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Routed<()>>();
        assert_send_sync::<Unrouted<()>>();
    }

    #[test]
    fn a_request_that_carries_nothing_is_keyed_by_its_path_s_route() {
        let routes = routes();
        let req = get().map(Routed::new);
        assert_eq!(carried_key(&req), None);
        assert_eq!(
            ClassKey::new(routes.clone()).key(&req),
            computed(&routes, &req)
        );
    }
}
