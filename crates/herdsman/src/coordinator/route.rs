//! What the stack knows about a request's endpoint class, looked up once.

use std::{collections::HashMap, fmt, sync::Arc};

use http::{HeaderName, Request};

use super::routed::{self, Routed};
use crate::{
    class::{Class, Classify},
    config::Config,
    http::{HttpKey, PathClasses, PollFetch},
    key::{Key, KeyFn},
    registry::Canonical,
    switch::{LayerName, Rollout, Switch, Switches},
};

/// One class's switches and settings, as the request path reads them.
pub(crate) struct ClassRoute {
    pub(crate) class: Class,
    /// Indexed by [`layer_index`].
    switches: [Switch; 6],
    /// The key of the class's requests (see [`ClassKey`]).
    pub(crate) key: HttpKey,
}

impl ClassRoute {
    #[inline]
    pub(crate) fn is_on(&self, layer: LayerName) -> bool {
        self.switches[layer_index(layer)].is_on()
    }
}

fn layer_index(layer: LayerName) -> usize {
    match layer {
        LayerName::Registry => 0,
        LayerName::Stats => 1,
        LayerName::Cache => 2,
        LayerName::Dedup => 3,
        LayerName::Breaker => 4,
        LayerName::Limit => 5,
    }
}

/// Every class's route, and the classifier for requests that carry none
/// (requests that did not come through [`Coordinated`](super::Coordinated)
/// or a poll loop).
pub(crate) struct Routes {
    paths: PathClasses,
    /// Looked up once per request: foldhash, several times cheaper than
    /// std's SipHash on a class name (the names come from the
    /// configuration, not from requests).
    classes: HashMap<Class, Arc<ClassRoute>, foldhash::fast::RandomState>,
    default: Arc<ClassRoute>,
}

/// The key of one class's requests: [`HttpKey`] with the class's `vary`
/// headers (and `keys.vary`); for a private class also the rollout's
/// identity header, a credential (redacted from the key's `Debug`, as
/// `Authorization` is); for a public class no credentials. The authority of
/// requests without one in their URI follows `keys.hosts`.
pub(crate) fn class_key(config: &Config, class: &crate::config::EffectiveClass) -> HttpKey {
    // Validated at start: an invalid name cannot get here.
    let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).ok();
    let mut key = HttpKey::new().hosts(&config.keys.hosts);
    for name in class.vary.iter().filter_map(|n| name(n)) {
        key = key.vary(name);
    }
    if let Some(identity) = config.rollout.identity_header.as_deref().and_then(name) {
        key = key.credential(identity);
    }
    if class.public {
        key.public()
    } else {
        key
    }
}

impl Routes {
    /// The routes of `config`, each class's switches from `switches`.
    pub(crate) fn new(config: &Config, switches: &Switches) -> Self {
        let mut classes = HashMap::default();
        let mut default = None;
        for effective in config.classes() {
            let class = effective.class.clone();
            let route = Arc::new(ClassRoute {
                switches: LayerName::ALL.map(|layer| switches.switch(layer, &class)),
                key: class_key(config, &effective),
                class: class.clone(),
            });
            if class == Class::default() {
                default = Some(route.clone());
            }
            classes.insert(class, route);
        }
        Routes {
            paths: config.path_classes(),
            default: default.expect("Config::classes ends with the default class"),
            classes,
        }
    }

    /// The route of `class` (the default class's for an unknown one).
    pub(crate) fn of_class(&self, class: &Class) -> &Arc<ClassRoute> {
        self.classes.get(class).unwrap_or(&self.default)
    }

    /// The route of a request path.
    pub(crate) fn of_path(&self, path: &str) -> &Arc<ClassRoute> {
        self.of_class(&self.paths.classify_path(path))
    }

    /// Reads the route of `req`: the one it carries, else its path's.
    #[inline]
    pub(crate) fn with<B, R>(
        &self,
        req: &Request<Routed<B>>,
        f: impl FnOnce(&ClassRoute) -> R,
    ) -> R {
        match req.body().route() {
            Some(route) => f(route),
            None => f(self.of_path(req.uri().path())),
        }
    }
}

impl fmt::Debug for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut classes: Vec<&str> = self.classes.keys().map(Class::as_str).collect();
        classes.sort_unstable();
        f.debug_struct("Routes").field("classes", &classes).finish()
    }
}

/// The endpoint class of a request in a [`Coordinator`](super::Coordinator)'s
/// stack: the one [`Classified`](super::Classified) found for it on the
/// way in, or else the class its path matches in the configuration; and
/// each layer's switch for that class ([`Classify::is_on`]: one atomic
/// load).
#[derive(Clone)]
pub struct ClassOf {
    routes: Arc<Routes>,
    /// Whether a poll loop's fetches go through the layer (all but the
    /// client-side Stats layer's: they are no client requests).
    polls: bool,
}

impl ClassOf {
    pub(crate) fn new(routes: Arc<Routes>) -> Self {
        ClassOf {
            routes,
            polls: true,
        }
    }

    /// The classifier of a layer that only client requests go through: a
    /// poll loop's fetches pass it as if it were switched off.
    pub(crate) fn clients_only(routes: Arc<Routes>) -> Self {
        ClassOf {
            routes,
            polls: false,
        }
    }
}

impl<B> Classify<Request<Routed<B>>> for ClassOf {
    #[inline]
    fn classify(&self, req: &Request<Routed<B>>) -> Class {
        self.routes.with(req, |route| route.class.clone())
    }

    #[inline]
    fn is_on(&self, req: &Request<Routed<B>>, layer: LayerName) -> bool {
        self.routes.with(req, |route| route.is_on(layer))
            && (self.polls || req.extensions().get::<PollFetch>().is_none())
    }
}

impl fmt::Debug for ClassOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ClassOf").field(&self.routes).finish()
    }
}

/// The key of a request in a [`Coordinator`](super::Coordinator)'s stack:
/// its class's [`HttpKey`]. One `ClassKey` keys the Registry, the Cache,
/// Dedup and the upstream Stats alike, so what it holds holds for all of
/// them:
///
/// - the class's `vary` headers (`classes.<name>.vary`, after `keys.vary`):
///   callers who differ in one never share an answer;
/// - for a private class, the credentials (`Authorization`,
///   `Proxy-Authorization`, `Cookie`) and the rollout's `identity_header`;
///   a class declared `public` keys no credentials;
/// - for a request without an authority in its URI (around a `Router`),
///   the host `keys.hosts` lists (an unlisted `Host` passes through
///   uncoordinated), or no host at all when the list is empty: one site.
///
/// The key is computed once per request, by [`Classified`](super::Classified)
/// on the way in, and carried with its body ([`Routed`]): the layers read
/// it from there.
#[derive(Clone)]
pub struct ClassKey {
    // One `Arc`: every layer holds a clone, and services are cloned per
    // request.
    routes: Arc<Routes>,
}

impl ClassKey {
    pub(crate) fn new(routes: Arc<Routes>) -> Self {
        ClassKey { routes }
    }
}

impl<B> KeyFn<Request<Routed<B>>> for ClassKey {
    #[inline]
    fn key(&self, req: &Request<Routed<B>>) -> Option<Key> {
        match routed::carried_key(req) {
            Some(key) => key.cloned(),
            None => self.routes.with(req, |route| route.key.key(req)),
        }
    }
}

impl<B: Default> Canonical<Request<Routed<B>>> for ClassKey {
    /// The key's parts only ([`HttpKey::canonical_request`], which marks it
    /// as a poll loop's fetch: the stack's client-side Stats layer lets it
    /// pass uncounted, since it is no client request), with its class.
    fn canonical(&self, req: &Request<Routed<B>>) -> Request<Routed<B>> {
        let route = match req.body().route_arc() {
            Some(route) => route.clone(),
            None => self.routes.of_path(req.uri().path()).clone(),
        };
        let canonical = route.key.canonical_request(req).map(Routed::into_inner);
        routed::carry(canonical, route)
    }

    fn held_bytes(&self, req: &Request<Routed<B>>) -> usize {
        crate::http::request_bytes(req)
    }
}

impl fmt::Debug for ClassKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassKey").finish_non_exhaustive()
    }
}

/// The caller of a request for the limit layer's per-caller rate rules: the
/// same identity the [`Rollout`] reads (the configured identity header, or
/// the credentials).
#[derive(Clone)]
pub struct CallerIdentity {
    rollout: Rollout,
}

impl CallerIdentity {
    pub(crate) fn new(rollout: Rollout) -> Self {
        CallerIdentity { rollout }
    }
}

impl<B> KeyFn<Request<B>> for CallerIdentity {
    /// The caller's identity, redacted: it is made of credentials, and the
    /// limit layer logs the keys of rate alerts.
    fn key(&self, req: &Request<B>) -> Option<Key> {
        self.rollout.identity(req).map(Key::redacted)
    }
}

impl fmt::Debug for CallerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallerIdentity").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_identity_key_never_shows_the_credentials() {
        let req = Request::get("/a")
            .header("authorization", "Bearer hunter2")
            .header("x-user", "alice-secret")
            .body(())
            .unwrap();
        for rollout in [
            Rollout::new(100),
            Rollout::new(100).with_identity_header(HeaderName::from_static("x-user")),
        ] {
            let key = CallerIdentity::new(rollout).key(&req).unwrap();
            let shown = format!("{key:?}");
            assert!(
                !shown.contains("hunter2") && !shown.contains("alice"),
                "{shown}"
            );
        }
    }
}
