use std::{
    fmt,
    task::{ready, Context, Poll},
};

use tower_layer::Layer;
use tower_service::Service;

use super::{Either, Switch};
use crate::error::BoxError;

/// Decides, per request, whether it takes the coordinated path.
///
/// Implemented by [`Switch`] (one atomic load), by
/// [`Rollout`][super::Rollout] for `http::Request`, by any
/// `Fn(&Req) -> bool`, and by a pair `(A, B)`, which admits a request when
/// both do (`A` first: put the switch there, so a switched-off path costs
/// no hashing).
///
#[cfg_attr(not(feature = "http"), doc = "[super::Rollout]: crate#feature-flags")]
pub trait Gate<Req> {
    /// Whether `req` takes the coordinated path.
    fn admit(&self, req: &Req) -> bool;
}

impl<Req> Gate<Req> for Switch {
    #[inline]
    fn admit(&self, _: &Req) -> bool {
        self.is_on()
    }
}

impl<Req, F: Fn(&Req) -> bool> Gate<Req> for F {
    fn admit(&self, req: &Req) -> bool {
        self(req)
    }
}

impl<Req, A: Gate<Req>, B: Gate<Req>> Gate<Req> for (A, B) {
    fn admit(&self, req: &Req) -> bool {
        self.0.admit(req) && self.1.admit(req)
    }
}

/// Sends each request through `on` (the layered service) or straight to
/// `off` (the plain inner service), as its [`Gate`] says at the moment of
/// `call`.
///
/// The choice is made per request, so a flip takes effect on the next call
/// and never touches a request in flight. Because the request is known only
/// in `call`, `poll_ready` drives **both** services to readiness (like
/// tower's `Steer`): a bounded inner service may hold a slot on both paths
/// until the call.
///
/// Errors of either path come out as [`BoxError`].
pub struct Switched<On, Off, G> {
    on: On,
    off: Off,
    gate: G,
    on_ready: bool,
    off_ready: bool,
}

impl<On, Off, G> Switched<On, Off, G> {
    /// Routes through `on` when `gate` admits a request, else to `off`.
    pub fn new(on: On, off: Off, gate: G) -> Self {
        Switched {
            on,
            off,
            gate,
            on_ready: false,
            off_ready: false,
        }
    }

    /// The coordinated service.
    pub fn on_ref(&self) -> &On {
        &self.on
    }

    /// The plain service.
    pub fn off_ref(&self) -> &Off {
        &self.off
    }

    /// The gate.
    pub fn gate(&self) -> &G {
        &self.gate
    }
}

impl<On, Off, G, Req> Service<Req> for Switched<On, Off, G>
where
    On: Service<Req>,
    On::Error: Into<BoxError>,
    Off: Service<Req, Response = On::Response>,
    Off::Error: Into<BoxError>,
    G: Gate<Req>,
{
    type Response = On::Response;
    type Error = BoxError;
    type Future = Either<On::Future, Off::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.on_ready {
            ready!(self.on.poll_ready(cx)).map_err(Into::into)?;
            self.on_ready = true;
        }
        if !self.off_ready {
            ready!(self.off.poll_ready(cx)).map_err(Into::into)?;
            self.off_ready = true;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            self.on_ready && self.off_ready,
            "Switched::call before poll_ready returned Ready"
        );
        if self.gate.admit(&req) {
            self.on_ready = false;
            Either::left(self.on.call(req))
        } else {
            self.off_ready = false;
            Either::right(self.off.call(req))
        }
    }
}

impl<On: Clone, Off: Clone, G: Clone> Clone for Switched<On, Off, G> {
    fn clone(&self) -> Self {
        // A clone has reserved nothing: it must be made ready itself.
        Switched::new(self.on.clone(), self.off.clone(), self.gate.clone())
    }
}

impl<On: fmt::Debug, Off: fmt::Debug, G: fmt::Debug> fmt::Debug for Switched<On, Off, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switched")
            .field("on", &self.on)
            .field("off", &self.off)
            .field("gate", &self.gate)
            .finish()
    }
}

/// Wraps a service `S` into [`Switched`]: `layer` applied to a clone of `S`
/// on the coordinated path, `S` itself on the plain one.
///
/// ```
/// use herdsman::{dedup::DedupLayer, key::Key, switch::{Switch, SwitchedLayer}};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let switch = Switch::fixed(false);
/// let svc = ServiceBuilder::new()
///     .layer(SwitchedLayer::new(
///         DedupLayer::new(|req: &u64| Some(Key::from(*req))),
///         switch,
///     ))
///     .service(service_fn(|req: u64| async move { Ok::<_, std::convert::Infallible>(req * 2) }));
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42); // straight to the inner service
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SwitchedLayer<L, G> {
    layer: L,
    gate: G,
}

impl<L, G> SwitchedLayer<L, G> {
    /// Applies `layer` to the requests `gate` admits.
    pub fn new(layer: L, gate: G) -> Self {
        SwitchedLayer { layer, gate }
    }
}

impl<S: Clone, L: Layer<S>, G: Clone> Layer<S> for SwitchedLayer<L, G> {
    type Service = Switched<L::Service, S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Switched::new(self.layer.layer(inner.clone()), inner, self.gate.clone())
    }
}
