//! A tower adapter for `async_singleflight`, which is not a tower layer.

use std::{
    fmt,
    future::Future,
    hash::Hash,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use async_singleflight::Group;
use herdsman::BoxError;
use tower::Service;

/// Runs each call of `S` through one `async_singleflight::Group`, keyed by
/// the request itself, with the group's default (retrying) `work`.
///
/// This is the adapter a tower user would write: the inner future is built in
/// `call` for every caller, and only the leader's is polled.
pub struct Singleflight<S, Req>
where
    S: Service<Req>,
{
    inner: S,
    group: Arc<Group<Req, S::Response, S::Error>>,
}

impl<S, Req> Singleflight<S, Req>
where
    S: Service<Req>,
{
    /// Wraps `inner` with a fresh group.
    pub fn new(inner: S) -> Self {
        Singleflight {
            inner,
            group: Arc::new(Group::new()),
        }
    }
}

impl<S, Req> Service<Req> for Singleflight<S, Req>
where
    S: Service<Req>,
    S::Response: Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    S::Future: Send + 'static,
    Req: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let group = self.group.clone();
        let fut = self.inner.call(req.clone());
        Box::pin(async move {
            match group.work(&req, fut).await {
                Ok(res) => Ok(res),
                Err(Some(err)) => Err(err.into()),
                Err(None) => Err("singleflight leader failed".into()),
            }
        })
    }
}

impl<S, Req> Clone for Singleflight<S, Req>
where
    S: Service<Req> + Clone,
{
    fn clone(&self) -> Self {
        Singleflight {
            inner: self.inner.clone(),
            group: self.group.clone(),
        }
    }
}

impl<S, Req> fmt::Debug for Singleflight<S, Req>
where
    S: Service<Req> + fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Singleflight")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
