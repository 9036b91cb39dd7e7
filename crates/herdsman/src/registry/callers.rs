//! Who subscribes, for the budgets per caller and per client address.

use crate::key::{Key, KeyFn};

/// Tells who sends a request: the caller's identity and its client
/// address, each as a [`Key`], for the registry's budgets per caller and
/// per address ([`RegistryLayer::with_callers`](super::RegistryLayer::with_callers)).
///
/// Implemented for `()` (nobody: only the budgets of the class apply) and
/// for a pair of [`KeyFn`]s `(identity, address)`, such as the
/// Coordinator's [`CallerIdentity`][crate::coordinator::CallerIdentity] and
/// [`ClientAddress`][crate::http::ClientAddress].
///
/// A request without an identity (anonymous) is budgeted by its address
/// only; one with neither, by its class only. Both are budgeted when both
/// are known, so that a client sending a new `Authorization` or `Cookie`
/// with each request is still held to its address's budget.
///
#[cfg_attr(
    not(feature = "coordinator"),
    doc = "[crate::coordinator::CallerIdentity]: crate#feature-flags"
)]
#[cfg_attr(
    not(feature = "http"),
    doc = "[crate::http::ClientAddress]: crate#feature-flags"
)]
pub trait Callers<Req> {
    /// The caller's identity (a user, credentials, an API key), if any.
    fn caller(&self, req: &Req) -> Option<Key>;

    /// The client's address (the connection's peer), if known.
    fn address(&self, req: &Req) -> Option<Key>;
}

impl<Req> Callers<Req> for () {
    fn caller(&self, _: &Req) -> Option<Key> {
        None
    }

    fn address(&self, _: &Req) -> Option<Key> {
        None
    }
}

impl<Req, I, A> Callers<Req> for (I, A)
where
    I: KeyFn<Req>,
    A: KeyFn<Req>,
{
    fn caller(&self, req: &Req) -> Option<Key> {
        self.0.key(req)
    }

    fn address(&self, req: &Req) -> Option<Key> {
        self.1.key(req)
    }
}
