//! The operator routes: stats JSON, Prometheus text, switches, dashboard.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use axum::{
    extract::{Path, State},
    http::{header, HeaderValue, StatusCode},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
    Json, Router,
};
use herdsman::{
    class::Class,
    config::Environment,
    stats::{describe_metrics, Stats},
    switch::{LayerName, Switches},
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use tokio::sync::watch;

use crate::{
    admin::{require_admin, AdminAccess},
    stats::stats_document,
};

/// A run-time on/off flag of the integration itself (such as `sse`), listed
/// and flipped with the stack's [`Switches`]. Clones share the flag.
/// Reading it is one read of a `tokio::sync::watch` value; open event
/// streams watch it and end when it is switched off, so that pages fall
/// back to polling at once.
#[derive(Clone)]
pub struct Toggle(Arc<watch::Sender<bool>>);

impl Toggle {
    /// A toggle, initially `on`.
    pub fn new(on: bool) -> Self {
        Toggle(Arc::new(watch::Sender::new(on)))
    }

    /// Whether it is on.
    #[inline]
    pub fn is_on(&self) -> bool {
        *self.0.borrow()
    }

    /// Sets it; returns the previous value.
    pub fn set(&self, on: bool) -> bool {
        self.0.send_replace(on)
    }

    /// Resolves when the toggle is (or becomes) off.
    pub fn off(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.subscribe();
        async move {
            // The sender lives as long as a Toggle clone: if all are gone,
            // nothing can switch it off any more.
            if rx.wait_for(|on| !on).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl fmt::Debug for Toggle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Toggle").field(&self.is_on()).finish()
    }
}

/// The process's Prometheus recorder, installed on first use, with every
/// herdsman metric described ([`describe_metrics`]: a `# HELP` and a
/// `# TYPE` line for each). `None` if another `metrics` recorder was
/// installed first.
pub fn prometheus() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                describe_metrics();
                Some(handle)
            }
            Err(err) => {
                tracing::warn!(error = %err, "herdsman: Prometheus recorder not installed; /metrics is empty");
                None
            }
        })
        .clone()
}

/// The operator routes, all under one prefix ([`Admin::DEFAULT_PREFIX`],
/// `/_herdsman`, unless [`AdminBuilder::with_prefix`] sets another), behind
/// [`AdminAccess`] (except the dashboard page and its assets, which hold no
/// data):
///
/// | route | answer |
/// |-------|--------|
/// | `GET /_herdsman/stats` | the stats document ([`stats_document`]) |
/// | `GET /_herdsman/metrics` | Prometheus text exposition, a `# HELP` and a `# TYPE` line for every metric |
/// | `GET /_herdsman/switches` | every switch: `[{"name", "enabled"}]` |
/// | `POST /_herdsman/switches/{name}` | body `{"enabled": bool}`; 404 for an unknown name |
/// | `GET /_herdsman/` | the dashboard: stats, alerts and switches (`GET /_herdsman` redirects there) |
/// | `GET /_herdsman/assets/dashboard.{js,css}` | its script and style, which an application's own page may include too (`crates/herdsman-axum/assets/README.md`) |
///
/// Nothing is mounted outside the prefix, so the router merges into an
/// application that has its own `/`.
///
/// Switch names: `stack` (the whole stack), `<layer>.<class>` (such as
/// `cache.active-users`), and each [`Toggle`] added.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<AdminInner>,
}

struct AdminInner {
    prefix: String,
    stats: Stats,
    environment: Environment,
    switches: Option<Switches>,
    toggles: Vec<(String, Toggle)>,
    fields: Vec<(String, Field)>,
    access: AdminAccess,
    prometheus: Option<PrometheusHandle>,
}

impl Admin {
    /// Where the admin routes are mounted unless
    /// [`AdminBuilder::with_prefix`] says otherwise.
    pub const DEFAULT_PREFIX: &'static str = "/_herdsman";

    /// Routes over `stats`, guarded by the environment's rule with `token`.
    pub fn builder(stats: Stats, environment: Environment, token: Option<&str>) -> AdminBuilder {
        AdminBuilder {
            inner: AdminInner {
                prefix: Admin::DEFAULT_PREFIX.to_owned(),
                stats,
                environment,
                switches: None,
                toggles: Vec::new(),
                fields: Vec::new(),
                access: AdminAccess::for_environment(environment, token),
                prometheus: prometheus(),
            },
        }
    }

    fn switch_list(&self) -> Vec<(String, bool)> {
        let mut list = Vec::new();
        if let Some(switches) = &self.inner.switches {
            list.push(("stack".to_owned(), switches.stack_is_on()));
            for s in switches.list() {
                list.push((format!("{}.{}", s.layer, s.class), s.on));
            }
        }
        for (name, toggle) in &self.inner.toggles {
            list.push((name.clone(), toggle.is_on()));
        }
        list
    }

    fn set(&self, name: &str, on: bool) -> Option<bool> {
        if let Some((_, toggle)) = self.inner.toggles.iter().find(|(n, _)| n == name) {
            let was = toggle.set(on);
            if was != on {
                tracing::info!(switch = name, on, "herdsman switch flipped");
                metrics::counter!("herdsman_switch_flips_total", "layer" => name.to_owned(), "endpoint" => "*")
                    .increment(1);
            }
            return Some(was);
        }
        let switches = self.inner.switches.as_ref()?;
        if name == "stack" {
            return Some(switches.set_all(on));
        }
        let (layer, class) = name.split_once('.')?;
        let layer: LayerName = layer.parse().ok()?;
        switches.set(layer, &Class::new(class), on).ok()
    }
}

/// A field the application adds to the stats document.
type Field = Box<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Builds an [`Admin`].
pub struct AdminBuilder {
    inner: AdminInner,
}

impl AdminBuilder {
    /// Lists and flips the stack's switches.
    pub fn with_switches(mut self, switches: Switches) -> Self {
        self.inner.switches = Some(switches);
        self
    }

    /// Adds a named toggle of the integration (`sse`, say).
    pub fn with_toggle(mut self, name: impl Into<String>, toggle: Toggle) -> Self {
        self.inner.toggles.push((name.into(), toggle));
        self
    }

    /// Adds a top-level field `name` to the stats document, computed by
    /// `value` at each request: what the application knows and the stats do
    /// not, such as [`Coordinator::sizes`](herdsman::Coordinator::sizes).
    /// The document's own fields keep their names: a field named like one
    /// of them is left out.
    pub fn with_field(
        mut self,
        name: impl Into<String>,
        value: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.inner.fields.push((name.into(), Box::new(value)));
        self
    }

    /// Mounts the admin routes under `prefix` instead of
    /// [`Admin::DEFAULT_PREFIX`]: a path such as `/ops/herdsman`, without a
    /// trailing slash.
    ///
    /// # Panics
    ///
    /// If `prefix` does not start with `/`, ends with `/` (the root `/`
    /// included: admin routes never live at the root) or holds a `{`,
    /// `}`, `?` or `#`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        assert!(
            prefix.starts_with('/')
                && !prefix.ends_with('/')
                && !prefix.contains(['{', '}', '?', '#']),
            "an admin prefix is a path like /_herdsman, not {prefix:?}"
        );
        self.inner.prefix = prefix;
        self
    }

    /// Replaces the access rule.
    pub fn with_access(mut self, access: AdminAccess) -> Self {
        self.inner.access = access;
        self
    }

    /// The routes, ready to merge into an application's router.
    pub fn router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let p = self.inner.prefix.clone();
        let admin = Admin {
            inner: Arc::new(self.inner),
        };
        let guarded = Router::new()
            .route(&format!("{p}/stats"), get(stats))
            .route(&format!("{p}/metrics"), get(metrics_text))
            .route(&format!("{p}/switches"), get(switches))
            .route(&format!("{p}/switches/{{name}}"), post(flip))
            .route_layer(middleware::from_fn_with_state(
                admin.inner.access.clone(),
                require_admin,
            ))
            .with_state(admin);
        let page = format!("{p}/");
        Router::new()
            .route(&p, get(move || async move { Redirect::permanent(&page) }))
            .route(
                &format!("{p}/"),
                get(|| async { asset(DASHBOARD_HTML, "text/html; charset=utf-8") }),
            )
            .route(
                &format!("{p}/assets/dashboard.js"),
                get(|| async { asset(DASHBOARD_JS, "text/javascript; charset=utf-8") }),
            )
            .route(
                &format!("{p}/assets/dashboard.css"),
                get(|| async { asset(DASHBOARD_CSS, "text/css; charset=utf-8") }),
            )
            .merge(guarded)
    }
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("prefix", &self.inner.prefix)
            .field("environment", &self.inner.environment)
            .field("access", &self.inner.access)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for AdminBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminBuilder").finish_non_exhaustive()
    }
}

async fn stats(State(admin): State<Admin>) -> Response {
    let snapshot = admin.inner.stats.snapshot();
    let resolved = admin.inner.stats.resolved_alerts();
    let mut doc = stats_document(
        admin.inner.environment,
        &snapshot,
        &resolved,
        admin.switch_list(),
    );
    if let Some(doc) = doc.as_object_mut() {
        for (name, value) in &admin.inner.fields {
            if !doc.contains_key(name) {
                doc.insert(name.clone(), value());
            }
        }
    }
    let mut r = Json(doc).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn metrics_text(State(admin): State<Admin>) -> Response {
    let body = admin
        .inner
        .prometheus
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn switches(State(admin): State<Admin>) -> Response {
    let list: Vec<_> = admin
        .switch_list()
        .into_iter()
        .map(|(name, enabled)| serde_json::json!({"name": name, "enabled": enabled}))
        .collect();
    Json(list).into_response()
}

/// The body of `POST /_herdsman/switches/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Flip {
    enabled: bool,
}

async fn flip(
    State(admin): State<Admin>,
    Path(name): Path<String>,
    Json(flip): Json<Flip>,
) -> Response {
    match admin.set(&name, flip.enabled) {
        Some(was) => Json(serde_json::json!({
            "name": name,
            "enabled": flip.enabled,
            "was": was,
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, format!("no switch named {name:?}")).into_response(),
    }
}

const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}
