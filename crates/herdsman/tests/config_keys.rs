//! Every key docs/CONFIGURATION.md documents takes effect, or is refused at
//! start naming the field: no setting is silently ignored.
//!
//! - The documented keys are read from the doc's tables: each `key` column
//!   under a heading that names a table (`` ### `[registry]` ``,
//!   `` #### `[limit.rate]` ``, `` ### `[classes.<name>]` ``), a
//!   `section.*` row standing for every key of that section, and a key whose
//!   own keys are listed (`limit.rate`) standing for them.
//! - The keys the loader accepts are found by asking it: an unknown key in a
//!   table is refused with the list of the table's keys.
//! - The two lists must be the same, and every key has a case in [`CASES`]
//!   that loads a configuration setting it to a value other than its default
//!   (TOML through the real loader) and checks its effect on the built
//!   Coordinator, with paused time, or its refusal. A key a class may
//!   override runs its case twice: set in the global section, and set in
//!   class `c` only (the other classes keep the global value).
//!
//! A new key needs a row in the doc and a line in [`CASES`] (with a check
//! function when none of those here fits).

mod support;

use std::{
    any::Any,
    collections::{BTreeMap, BTreeSet},
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        atomic::{AtomicU16, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::join_all;
use herdsman::{
    breaker::{BreakerOpen, ProbeTimedOut},
    class::Class,
    config::{Config, ConfigError, Environment, StaticEnv},
    error::find,
    http::{ClientAddr, HttpBody, SharedBody},
    limit::{Overloaded, RateLimited, TooManyInFlight},
    registry::{Limit, SubscribeOptions, Subscription, TooManySubscribers},
    stats::AlertRule,
    switch::LayerName,
    BoxError, Coordinated, Coordinator,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use support::{
    gaps,
    http::{reply, request},
    settle, CallLog,
};
use tokio::time::{self, Instant};
use tower::{service_fn, util::BoxCloneSyncService, Layer, ServiceExt};

const DOC: &str = include_str!("../../../docs/CONFIGURATION.md");

/// How the doc writes a class's keys.
const CLASS: &str = "classes.<name>.";

// ------------------------------------------------------------------ the cases

/// A check: given where its key is set, runs with paused time and panics
/// if the key has no effect.
type Check = fn(Scope) -> Pin<Box<dyn Future<Output = ()>>>;

/// One documented key (without `classes.<name>.`) and its check.
struct Case {
    key: &'static str,
    check: Check,
}

macro_rules! case {
    ($key:literal, $check:expr) => {
        Case {
            key: $key,
            check: |scope| Box::pin($check(scope)),
        }
    };
}

/// One line per documented key.
const CASES: &[Case] = &[
    case!("layers.registry", |s| layer_off(s, LayerName::Registry)),
    case!("layers.stats", |s| layer_off(s, LayerName::Stats)),
    case!("layers.cache", |s| layer_off(s, LayerName::Cache)),
    case!("layers.dedup", |s| layer_off(s, LayerName::Dedup)),
    case!("layers.breaker", |s| layer_off(s, LayerName::Breaker)),
    case!("layers.limit", |s| layer_off(s, LayerName::Limit)),
    case!("registry.interval", registry_interval),
    case!("registry.floor", registry_floor),
    case!("registry.allow_fast_polling", registry_allow_fast_polling),
    case!("registry.jitter", registry_jitter),
    case!("registry.linger", registry_linger),
    case!("registry.max_keys", registry_max_keys),
    case!("registry.max_keys_per_caller", |s| registry_keys_per(
        s,
        "registry.max_keys_per_caller",
        Limit::KeysPerCaller
    )),
    case!("registry.max_keys_per_address", |s| registry_keys_per(
        s,
        "registry.max_keys_per_address",
        Limit::KeysPerAddress
    )),
    case!(
        "registry.max_subscribers_per_key",
        registry_max_subscribers_per_key
    ),
    case!("registry.max_subscribers_per_caller", |s| {
        registry_subscribers_per(
            s,
            "registry.max_subscribers_per_caller",
            Limit::SubscribersPerCaller,
        )
    }),
    case!("registry.max_subscribers_per_address", |s| {
        registry_subscribers_per(
            s,
            "registry.max_subscribers_per_address",
            Limit::SubscribersPerAddress,
        )
    }),
    case!("registry.max_subscribers", registry_max_subscribers),
    case!("registry.max_memory", registry_max_memory),
    case!("cache.ttl", cache_ttl),
    case!("cache.stale_while_revalidate", cache_stale_while_revalidate),
    case!("cache.stale_if_error", cache_stale_if_error),
    case!("cache.max_bytes", cache_max_bytes),
    case!("cache.max_entries", cache_max_entries),
    case!("cache.mode", cache_mode),
    case!("cache.sweep_interval", cache_sweep_interval),
    case!("keys.hosts", keys_hosts),
    case!("keys.vary", keys_vary),
    case!("keys.max_len", keys_max_len),
    case!("dedup.window", dedup_window),
    case!("breaker.window", breaker_window),
    case!("breaker.time_window", breaker_time_window),
    case!("breaker.minimum_calls", breaker_minimum_calls),
    case!("breaker.failure_rate", breaker_failure_rate),
    case!("breaker.consecutive_failures", breaker_consecutive_failures),
    case!("breaker.slow_call_duration", breaker_slow_call_duration),
    case!("breaker.slow_call_rate", breaker_slow_call_rate),
    case!("breaker.open_duration", breaker_open_duration),
    case!("breaker.backoff", breaker_backoff),
    case!("breaker.max_open_duration", breaker_max_open_duration),
    case!("breaker.jitter", breaker_jitter),
    case!("breaker.half_open_probes", breaker_half_open_probes),
    case!("breaker.probe_timeout", breaker_probe_timeout),
    case!("limit.max_concurrency", limit_max_concurrency),
    case!("limit.max_queue", limit_max_queue),
    case!("limit.max_wait", limit_max_wait),
    case!("limit.retry_after", limit_retry_after),
    case!(
        "limit.max_concurrency_per_caller",
        limit_max_concurrency_per_caller
    ),
    case!(
        "limit.max_concurrency_per_address",
        limit_max_concurrency_per_address
    ),
    case!("limit.rate.per_second", rate_per_second),
    case!("limit.rate.per_minute", rate_per_minute),
    case!("limit.rate.burst", rate_burst),
    case!("limit.rate.by", rate_by),
    case!("limit.rate.alert_only", rate_alert_only),
    case!("limit.rate.max_keys", rate_max_keys),
    case!("alerts.upstream_calls_per_minute", alerts_upstream_calls),
    case!("alerts.memory_bytes", alerts_memory_bytes),
    case!("alerts.error_rate", alerts_error_rate),
    case!("alerts.error_window", alerts_error_window),
    case!("alerts.min_samples", alerts_min_samples),
    case!("alerts.breaker_trips", alerts_breaker_trips),
    case!("alerts.resolve_ratio", alerts_resolve_ratio),
    case!("admin.token", admin_token),
    case!("rollout.percent", rollout_percent),
    case!("rollout.allow", |s| rollout_admits_ann(s, "rollout.allow")),
    case!("rollout.identity_header", |s| rollout_admits_ann(
        s,
        "rollout.identity_header"
    )),
    case!("server.header_read_timeout", |s| server_key(
        s,
        "server.header_read_timeout",
        "\"3s\"",
        ("\"0s\"", "must be greater than zero")
    )),
    case!("server.body_read_timeout", |s| server_key(
        s,
        "server.body_read_timeout",
        "\"2m\"",
        ("\"0s\"", "must be greater than zero")
    )),
    case!("server.idle_timeout", |s| server_key(
        s,
        "server.idle_timeout",
        "\"5m\"",
        ("\"0s\"", "must be greater than zero")
    )),
    case!("server.shutdown_timeout", |s| server_key(
        s,
        "server.shutdown_timeout",
        "\"9s\"",
        ("\"0s\"", "must be greater than zero")
    )),
    case!("server.max_connections", |s| server_key(
        s,
        "server.max_connections",
        "7",
        ("0", "must be between 1 and 16777216")
    )),
    case!("server.max_header_bytes", |s| server_key(
        s,
        "server.max_header_bytes",
        "32768",
        ("100", "must be between 8192 and 262144")
    )),
    case!("server.max_concurrent_streams", |s| server_key(
        s,
        "server.max_concurrent_streams",
        "8",
        ("0", "must be at least 1")
    )),
    case!("server.trusted_proxies", |s| server_key(
        s,
        "server.trusted_proxies",
        "[\"10.0.0.0/8\", \"::1\"]",
        ("[\"10.0.0.0/0\"]", "trusts every address")
    )),
    case!("redis.url", redis_url),
    case!("redis.key_prefix", |s| server_key(
        s,
        "redis.key_prefix",
        "\"{app}:\"",
        ("\"\"", "must not be empty")
    )),
    case!("redis.op_timeout", |s| server_key(
        s,
        "redis.op_timeout",
        "\"50ms\"",
        ("\"0s\"", "must be greater than zero")
    )),
    case!("redis.flight_lease", |s| server_key(
        s,
        "redis.flight_lease",
        "\"20s\"",
        ("\"50ms\"", "must be longer than op_timeout")
    )),
    case!("redis.loop_lease", |s| server_key(
        s,
        "redis.loop_lease",
        "\"9s\"",
        ("\"0s\"", "must be greater than zero")
    )),
    case!("redis.share_breaker", redis_share_breaker),
    case!("server.forwarded_header", |s| server_key(
        s,
        "server.forwarded_header",
        "\"forwarded\"",
        (
            "\"x-real-ip\"",
            "expected one of x-forwarded-for, forwarded"
        )
    )),
    case!("server.max_event_streams", |s| server_key(
        s,
        "server.max_event_streams",
        "7",
        ("0", "must be at least 1")
    )),
    case!("paths", class_paths),
    case!("public", class_public),
    case!("vary", class_vary),
];

// ------------------------------------------------------------------ the runs

#[test]
fn the_documented_keys_are_the_keys_the_loader_accepts() {
    let documented = documented();
    let accepted = accepted();
    let undocumented: Vec<&String> = accepted.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "accepted but not in docs/CONFIGURATION.md: {undocumented:?}\n\
         in docs/CONFIGURATION.md but refused as unknown: {unknown:?}"
    );
    assert!(documented.len() > 80, "{documented:?}");
}

#[test]
fn every_case_is_for_a_documented_key() {
    let documented = documented();
    let stale: Vec<&str> = CASES
        .iter()
        .map(|c| c.key)
        .filter(|key| !documented.contains(*key) && !documented.contains(&format!("{CLASS}{key}")))
        .collect();
    assert!(stale.is_empty(), "cases for undocumented keys: {stale:?}");
}

#[test]
fn every_documented_key_takes_effect_or_is_refused_at_start() {
    let documented = documented();
    let mut failures = Vec::new();
    for key in &documented {
        let (name, scope) = match key.strip_prefix(CLASS) {
            Some(name) => (name, Scope::Class),
            None => (key.as_str(), Scope::Global),
        };
        let Some(case) = CASES.iter().find(|c| c.key == name) else {
            failures.push(format!("{key}: no case in CASES"));
            continue;
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on((case.check)(scope));
        }));
        if let Err(panic) = run {
            failures.push(format!("{key}: {}", panic_message(&*panic)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documented keys:\n{}",
        failures.len(),
        documented.len(),
        failures.join("\n")
    );
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".to_owned())
}

// ------------------------------------------------------- the documented keys

/// Every key the doc lists, class keys as `classes.<name>.KEY`.
fn documented() -> BTreeSet<String> {
    let mut table: Option<String> = None;
    let mut in_keys = false;
    let mut rows = Vec::new();
    for line in DOC.lines() {
        if line.starts_with('#') {
            table = line
                .split('`')
                .nth(1)
                .and_then(|t| t.strip_prefix('[')?.strip_suffix(']'))
                .map(str::to_owned);
            in_keys = false;
        } else if line.starts_with("| key |") {
            in_keys = table.is_some();
        } else if !line.starts_with('|') {
            in_keys = false;
        } else if let (true, Some(table)) = (in_keys, &table) {
            let cell = line.split('|').nth(1).map(str::trim);
            if let Some(name) = cell.and_then(|c| c.strip_prefix('`')?.strip_suffix('`')) {
                rows.push(format!("{table}.{name}"));
            }
        }
    }
    let globals: Vec<String> = rows
        .iter()
        .filter(|r| !r.starts_with(CLASS))
        .cloned()
        .collect();
    let mut keys = BTreeSet::new();
    for row in rows {
        match row.strip_suffix(".*") {
            Some(section) => {
                let section = section.strip_prefix(CLASS).unwrap_or(section);
                let every: Vec<&String> = globals
                    .iter()
                    .filter(|g| g.starts_with(&format!("{section}.")))
                    .collect();
                assert!(!every.is_empty(), "{row}: no [{section}] keys documented");
                keys.extend(every.into_iter().map(|g| format!("{CLASS}{g}")));
            }
            None => {
                keys.insert(row);
            }
        }
    }
    // A key whose own keys are listed (`limit.rate`) stands for them.
    let parents: Vec<String> = keys
        .iter()
        .filter(|k| keys.iter().any(|other| other.starts_with(&format!("{k}."))))
        .cloned()
        .collect();
    for parent in parents {
        keys.remove(&parent);
    }
    keys
}

// --------------------------------------------------------- the accepted keys

/// Every key the loader accepts, found by asking it: class keys as
/// `classes.<name>.KEY`.
fn accepted() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    walk(&mut keys, &mut Vec::new());
    keys
}

fn walk(keys: &mut BTreeSet<String>, path: &mut Vec<String>) {
    let Some(fields) = fields_of(path) else {
        let mut key = path.join(".");
        if let Some(rest) = key.strip_prefix("classes.probe.") {
            key = format!("{CLASS}{rest}");
        }
        keys.insert(key);
        return;
    };
    for field in fields {
        path.push(field);
        if path.len() == 1 && path[0] == "classes" {
            // A table of classes by name.
            path.push("probe".to_owned());
            walk(keys, path);
            path.pop();
        } else {
            walk(keys, path);
        }
        path.pop();
    }
}

/// The keys of the table at `path`, from the loader's refusal of an unknown
/// one; `None` if `path` is not a table.
fn fields_of(path: &[String]) -> Option<Vec<String>> {
    let mut toml = String::new();
    let in_class = path.len() >= 2 && path[0] == "classes";
    if in_class && path.get(2).map(String::as_str) != Some("paths") {
        toml.push_str("[classes.probe]\npaths = [\"/probe\"]\n");
    }
    if !path.is_empty() && path != ["classes", "probe"] {
        toml.push_str(&format!("[{}]\n", path.join(".")));
    }
    toml.push_str("zzz_probe = 1\n");
    let source = StaticEnv::new().file("herdsman.toml", toml);
    let err = Config::load_from(Environment::Test, &source).err()?;
    let probe = path
        .iter()
        .map(String::as_str)
        .chain(["zzz_probe"])
        .collect::<Vec<_>>()
        .join(".");
    let problem = err.problems().iter().find(|p| p.path == probe)?;
    let list = problem
        .reason
        .strip_prefix("unknown key, expected one of ")?;
    Some(list.split(", ").map(str::to_owned).collect())
}

// ------------------------------------------------------------------ the setup

/// Where a case sets its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// In the global section: requests of the default class (`/g/...`).
    Global,
    /// In class `c` (paths `/c/*`) only: requests of `c` (`/c/...`), and
    /// the default class keeps the global value.
    Class,
}

/// A configuration: the key under test first, then what its check needs.
#[derive(Clone)]
struct Setup {
    scope: Scope,
    env: Environment,
    /// Keys set in the scope, as `section.key` (the first is the key under
    /// test) with their TOML values.
    scoped: Vec<(String, String)>,
    /// Keys set in the global sections whatever the scope.
    global: Vec<(String, String)>,
}

impl Setup {
    /// `key = value` in `scope`, in the test profile.
    fn new(scope: Scope, key: &str, value: &str) -> Self {
        Setup {
            scope,
            env: Environment::Test,
            scoped: vec![(key.to_owned(), value.to_owned())],
            global: Vec::new(),
        }
    }

    /// Another key in the same scope.
    fn also(mut self, key: &str, value: &str) -> Self {
        self.scoped.push((key.to_owned(), value.to_owned()));
        self
    }

    /// A key in the global section.
    fn global(mut self, key: &str, value: &str) -> Self {
        self.global.push((key.to_owned(), value.to_owned()));
        self
    }

    fn env(mut self, env: Environment) -> Self {
        self.env = env;
        self
    }

    /// The same without the key under test.
    fn without_key(&self) -> Self {
        Setup {
            scoped: self.scoped[1..].to_vec(),
            ..self.clone()
        }
    }

    fn toml(&self) -> String {
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut put = |table: String, key: &str, value: &str| {
            let (parent, leaf) = match key.rsplit_once('.') {
                Some((parent, leaf)) if table.is_empty() => (parent.to_owned(), leaf),
                Some((parent, leaf)) => (format!("{table}.{parent}"), leaf),
                None => (table, key),
            };
            tables
                .entry(parent)
                .or_default()
                .push(format!("{leaf} = {value}"));
        };
        if !self.scoped.iter().any(|(k, _)| k == "paths") {
            put("classes.c".into(), "paths", "[\"/c/*\"]");
        }
        for (key, value) in &self.global {
            put(String::new(), key, value);
        }
        let scope = match self.scope {
            Scope::Global => String::new(),
            Scope::Class => "classes.c".to_owned(),
        };
        for (key, value) in &self.scoped {
            put(scope.clone(), key, value);
        }
        tables
            .into_iter()
            .map(|(table, lines)| format!("[{table}]\n{}\n", lines.join("\n")))
            .collect()
    }

    fn load(&self) -> Result<Config, ConfigError> {
        let source = StaticEnv::new().file("herdsman.toml", self.toml());
        Config::load_from(self.env, &source)
    }

    /// The error start-up prints.
    fn refusal(&self) -> String {
        match self.load() {
            Ok(_) => panic!("accepted:\n{}", self.toml()),
            Err(err) => err.to_string(),
        }
    }

    /// The Coordinator start-up builds, after checking that the key under
    /// test is set to something other than what it would be without it.
    fn coordinator(&self) -> Coordinator {
        let with = self
            .load()
            .unwrap_or_else(|e| panic!("refused: {e}\n{}", self.toml()));
        let changed = match (self.scope, self.without_key().load()) {
            (_, Err(_)) => true,
            (Scope::Global, Ok(without)) => without != with,
            (Scope::Class, Ok(without)) => without.class("c") != with.class("c"),
        };
        let (key, value) = &self.scoped[0];
        assert!(changed, "{key} = {value} is what it would be anyway");
        Coordinator::builder()
            .environment(self.env)
            .config(with)
            .build()
            .unwrap_or_else(|e| panic!("the coordinator refused it: {e}"))
    }

    /// The class the scope's requests belong to.
    fn class(&self) -> Class {
        match self.scope {
            Scope::Global => Class::default(),
            Scope::Class => Class::new("c"),
        }
    }

    /// A path of the scope's class.
    fn path(&self, rest: &str) -> String {
        match self.scope {
            Scope::Global => format!("/g/{rest}"),
            Scope::Class => format!("/c/{rest}"),
        }
    }
}

// ------------------------------------------------------------------ the world

type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// An upstream answering "`path` #`n`" with the status and after the delay
/// the test sets, and logging each call.
#[derive(Clone, Default)]
struct Origin {
    log: CallLog,
    /// Zero: 200.
    status: Arc<AtomicU16>,
    delay_ms: Arc<AtomicU64>,
}

impl Origin {
    fn service(&self) -> Upstream {
        let this = self.clone();
        BoxCloneSyncService::new(service_fn(move |req: Request<Full<Bytes>>| {
            let this = this.clone();
            async move {
                let path = req.uri().path().to_owned();
                let n = this.log.record(&path);
                let delay = this.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    time::sleep(Duration::from_millis(delay)).await;
                }
                let status = match this.status.load(Ordering::SeqCst) {
                    0 => StatusCode::OK,
                    code => StatusCode::from_u16(code).unwrap(),
                };
                Ok(Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::from(format!("{path} #{n}"))))
                    .unwrap())
            }
        }))
    }

    fn answer(&self, ok: bool) {
        let status = if ok { 0 } else { 500 };
        self.status.store(status, Ordering::SeqCst);
    }

    fn delay(&self, delay: Duration) {
        self.delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.log.calls()
    }

    fn calls_to(&self, path: &str) -> Vec<Instant> {
        self.log.calls_to(path)
    }
}

/// How a call ended, in one letter: `S` 2xx, `F` 5xx, `O` breaker open,
/// `T` probe timed out, `L` overloaded, `R` rate limited, `C` over the
/// caller's (or address's) share.
fn letter(answer: &Result<(StatusCode, String), BoxError>) -> char {
    match answer {
        Ok((status, _)) if status.is_success() => 'S',
        Ok((status, _)) if status.is_server_error() => 'F',
        Ok((status, _)) => panic!("unexpected status {status}"),
        Err(err) if find::<BreakerOpen>(&**err).is_some() => 'O',
        Err(err) if find::<ProbeTimedOut>(&**err).is_some() => 'T',
        Err(err) if find::<Overloaded>(&**err).is_some() => 'L',
        Err(err) if find::<RateLimited>(&**err).is_some() => 'R',
        Err(err) if find::<TooManyInFlight>(&**err).is_some() => 'C',
        Err(err) => panic!("unexpected error {err}"),
    }
}

/// A Coordinator built from a setup, around an [`Origin`].
struct World {
    setup: Setup,
    coordinator: Coordinator,
    origin: Origin,
    svc: Coordinated<Upstream>,
}

impl World {
    fn new(setup: Setup) -> World {
        let coordinator = setup.coordinator();
        let origin = Origin::default();
        let svc = coordinator.layer().layer(origin.service());
        World {
            setup,
            coordinator,
            origin,
            svc,
        }
    }

    fn request(&self, path: &str, header: Option<(&str, &str)>) -> Request<Full<Bytes>> {
        request(Method::GET, path, header.as_slice())
    }

    async fn call(
        &self,
        path: &str,
        header: Option<(&str, &str)>,
    ) -> Result<(StatusCode, String), BoxError> {
        self.send(self.request(path, header)).await
    }

    /// GET `path` as `user`, from the client address `ip`.
    async fn call_from(&self, ip: &str, path: &str, user: &str) -> char {
        let mut req = self.request(path, Some(("authorization", user)));
        let addr = format!("{ip}:50000").parse().unwrap();
        req.extensions_mut().insert(ClientAddr(addr));
        letter(&self.send(req).await)
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, String), BoxError> {
        let res: Response<HttpBody<Full<Bytes>>> = self.svc.clone().oneshot(req).await?;
        let reply = reply(res).await?;
        Ok((reply.status, reply.body))
    }

    /// GET `rest` in the scope's class.
    async fn get(&self, rest: &str) -> Result<(StatusCode, String), BoxError> {
        self.call(&self.setup.path(rest), None).await
    }

    /// The body of a successful GET of `rest`.
    async fn body(&self, rest: &str) -> String {
        match self.get(rest).await {
            Ok((StatusCode::OK, body)) => body,
            other => panic!("GET {rest}: {other:?}"),
        }
    }

    /// A GET of `rest`, the upstream succeeding (`S`) or failing (`F`), in
    /// one letter.
    async fn outcome(&self, rest: &str, upstream: char) -> char {
        self.origin.answer(upstream == 'S');
        letter(&self.get(rest).await)
    }

    /// One sequential GET per letter of `upstream`; their outcomes.
    async fn run(&self, upstream: &str) -> String {
        let mut out = String::new();
        for c in upstream.chars() {
            out.push(self.outcome("x", c).await);
        }
        out
    }

    /// Concurrent GETs of `paths`; their outcomes, sorted.
    async fn concurrent(&self, paths: &[&str]) -> String {
        let answers = join_all(paths.iter().map(|p| self.get(p))).await;
        let mut letters: Vec<char> = answers.iter().map(letter).collect();
        letters.sort_unstable();
        letters.into_iter().collect()
    }

    fn subscribe(
        &self,
        path: &str,
    ) -> Result<Subscription<Response<SharedBody>>, TooManySubscribers> {
        self.svc.subscribe(self.request(path, None))
    }

    /// Subscribes as `Authorization: Bearer <who>` from client address
    /// `from`.
    fn subscribe_as(
        &self,
        path: &str,
        who: &str,
        from: &str,
    ) -> Result<Subscription<Response<SharedBody>>, TooManySubscribers> {
        let bearer = format!("Bearer {who}");
        let mut req = self.request(path, Some(("authorization", &bearer)));
        let peer = format!("{from}:1000").parse().unwrap();
        req.extensions_mut().insert(ClientAddr(peer));
        self.svc.subscribe(req)
    }

    fn keys(&self) -> u64 {
        self.coordinator.registry().stats().keys
    }

    /// Whether an alert of `rule` is firing after an evaluation.
    fn alert(&self, rule: AlertRule) -> bool {
        let stats = self.coordinator.stats();
        stats.evaluate();
        stats.active_alerts().iter().any(|a| a.rule == rule)
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn global_only(scope: Scope) {
    assert_eq!(
        scope,
        Scope::Global,
        "a global-only key documented per class"
    );
}

// ------------------------------------------------------------------ [layers]

async fn layer_off(scope: Scope, layer: LayerName) {
    let key = format!("layers.{}", layer.as_str());
    let w = World::new(Setup::new(scope, &key, "false"));
    let switches = w.coordinator.switches();
    assert!(!switches.is_on(layer, &w.setup.class()), "the switch is on");
    if scope == Scope::Class {
        assert!(switches.is_on(layer, &Class::default()));
    }
}

// ---------------------------------------------------------------- [registry]

async fn registry_interval(scope: Scope) {
    let w = World::new(Setup::new(scope, "registry.interval", "\"200ms\""));
    let path = w.setup.path("x");
    let sub = w.subscribe(&path).unwrap();
    assert_eq!(sub.interval(), ms(200));
    time::sleep(ms(1001)).await;
    assert_eq!(w.origin.calls_to(&path).len(), 6, "at 0, 200, ... 1000 ms");
    if scope == Scope::Class {
        assert_eq!(w.subscribe("/g/x").unwrap().interval(), ms(50));
    }
}

async fn registry_floor(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "registry.floor", "\"200ms\""));
    let options = SubscribeOptions::new().with_interval(ms(10));
    let sub = w
        .svc
        .subscribe_with(w.request("/g/x", None), options)
        .unwrap();
    assert_eq!(sub.interval(), ms(200), "a subscriber asks for 10 ms");
}

async fn registry_allow_fast_polling(scope: Scope) {
    global_only(scope);
    let setup = Setup::new(scope, "registry.allow_fast_polling", "true")
        .global("registry.floor", "\"200ms\"")
        .global("registry.interval", "\"300ms\"")
        .env(Environment::Production);
    let refused = setup.without_key().refusal();
    assert!(
        refused.contains(r#"registry.floor = "200ms": under 1s in production"#),
        "{refused}"
    );
    let w = World::new(setup);
    assert_eq!(w.subscribe("/g/x").unwrap().interval(), ms(300));
}

async fn registry_jitter(scope: Scope) {
    // Polls at the floor: the jitter only ever lengthens them.
    let w = World::new(
        Setup::new(scope, "registry.jitter", "0.5")
            .global("registry.floor", "\"1s\"")
            .global("registry.interval", "\"1s\""),
    );
    let path = w.setup.path("x");
    let _sub = w.subscribe(&path).unwrap();
    let _other = w.subscribe("/g/other").unwrap();
    time::sleep(secs(40)).await;
    let spread = gaps(&w.origin.calls_to(&path));
    assert!(spread.len() >= 20, "{spread:?}");
    assert!(
        spread.iter().all(|g| (secs(1)..=ms(1500)).contains(g)),
        "between the floor and 1.5 × the interval: {spread:?}"
    );
    let (min, max) = (spread.iter().min().unwrap(), spread.iter().max().unwrap());
    assert!(*max - *min > ms(200), "not spread: {spread:?}");
    if scope == Scope::Class {
        let other = gaps(&w.origin.calls_to("/g/other"));
        assert!(other.iter().all(|g| *g == secs(1)), "{other:?}");
    }
}

async fn registry_linger(scope: Scope) {
    let w = World::new(Setup::new(scope, "registry.linger", "\"10s\""));
    let sub = w.subscribe(&w.setup.path("x")).unwrap();
    let other = (scope == Scope::Class).then(|| w.subscribe("/g/other").unwrap());
    settle().await;
    drop((sub, other));
    time::sleep(secs(5)).await;
    assert_eq!(w.keys(), 1, "only the lingering loop is left after 5 s");
    time::sleep(secs(6)).await;
    assert_eq!(w.keys(), 0);
}

/// A path of the other class than the scope's.
fn elsewhere(w: &World, rest: &str) -> String {
    match w.setup.scope {
        Scope::Global => format!("/c/{rest}"),
        Scope::Class => format!("/g/{rest}"),
    }
}

async fn registry_max_keys(scope: Scope) {
    let w = World::new(Setup::new(scope, "registry.max_keys", "1"));
    let _a = w.subscribe(&w.setup.path("a")).unwrap();
    let refused = w.subscribe(&w.setup.path("b")).unwrap_err();
    assert_eq!(refused.reason(), Limit::Keys);
    // Per class: the other class's first key (and, in class scope, its
    // second) is not refused.
    let _b = w.subscribe(&elsewhere(&w, "a")).unwrap();
    if scope == Scope::Class {
        let _c = w.subscribe(&elsewhere(&w, "b")).unwrap();
    }
}

/// A key budget per caller (`who`) or per address (`from`) of 1: a second
/// key from the same one is refused with `limit`; others are served.
async fn registry_keys_per(scope: Scope, key: &str, limit: Limit) {
    let w = World::new(Setup::new(scope, key, "1"));
    let per_caller = limit == Limit::KeysPerCaller;
    // The same caller from another address, or another caller from the
    // same address: what the budget does not count.
    let (again, other) = if per_caller {
        (("ann", "10.0.0.2"), ("bob", "10.0.0.1"))
    } else {
        (("bob", "10.0.0.1"), ("ann", "10.0.0.2"))
    };
    let _a = w
        .subscribe_as(&w.setup.path("a"), "ann", "10.0.0.1")
        .unwrap();
    let refused = w.subscribe_as(&w.setup.path("b"), again.0, again.1);
    assert_eq!(refused.unwrap_err().reason(), limit);
    let _b = w
        .subscribe_as(&w.setup.path("c"), other.0, other.1)
        .unwrap();
    if scope == Scope::Class {
        let _c = w.subscribe_as("/g/a", "ann", "10.0.0.1").unwrap();
        let _d = w.subscribe_as("/g/b", again.0, again.1).unwrap();
    }
}

/// A subscription budget per caller or per address of 1, as
/// [`registry_keys_per`].
async fn registry_subscribers_per(scope: Scope, key: &str, limit: Limit) {
    let w = World::new(Setup::new(scope, key, "1"));
    let (again, other) = if limit == Limit::SubscribersPerCaller {
        (("ann", "10.0.0.2"), ("bob", "10.0.0.1"))
    } else {
        (("bob", "10.0.0.1"), ("ann", "10.0.0.2"))
    };
    // Keys differ by credentials (the classes are private): the budget
    // counts subscriptions, whatever their keys.
    let path = w.setup.path("x");
    let _a = w.subscribe_as(&path, "ann", "10.0.0.1").unwrap();
    let refused = w.subscribe_as(&path, again.0, again.1);
    assert_eq!(refused.unwrap_err().reason(), limit);
    let _b = w.subscribe_as(&path, other.0, other.1).unwrap();
    if scope == Scope::Class {
        let _c = w.subscribe_as("/g/x", "ann", "10.0.0.1").unwrap();
        let _d = w.subscribe_as("/g/x", again.0, again.1).unwrap();
    }
}

async fn registry_max_memory(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "registry.max_memory", "1"));
    assert_eq!(w.subscribe("/g/a").unwrap_err().reason(), Limit::Memory);
    assert_eq!(w.keys(), 0);
}

async fn registry_max_subscribers_per_key(scope: Scope) {
    let w = World::new(Setup::new(scope, "registry.max_subscribers_per_key", "1"));
    let path = w.setup.path("x");
    let _a = w.subscribe(&path).unwrap();
    let refused = w.subscribe(&path).unwrap_err();
    assert_eq!(refused.reason(), Limit::SubscribersPerKey);
    if scope == Scope::Class {
        let _b = w.subscribe("/g/x").unwrap();
        let _c = w.subscribe("/g/x").unwrap();
    }
}

async fn registry_max_subscribers(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "registry.max_subscribers", "1"));
    let _a = w.subscribe("/g/a").unwrap();
    assert_eq!(
        w.subscribe("/g/b").unwrap_err().reason(),
        Limit::Subscribers
    );
}

// ------------------------------------------------------------------- [cache]

async fn cache_ttl(scope: Scope) {
    let w = World::new(Setup::new(scope, "cache.ttl", "\"10s\""));
    let first = w.body("x").await;
    time::sleep(secs(5)).await;
    assert_eq!(w.body("x").await, first, "fresh for 10 s");
    time::sleep(secs(6)).await;
    assert_ne!(w.body("x").await, first);
    assert_eq!(w.origin.calls(), 2);
}

async fn cache_stale_while_revalidate(scope: Scope) {
    let w = World::new(Setup::new(scope, "cache.stale_while_revalidate", "\"20s\""));
    let first = w.body("x").await;
    time::sleep(secs(1)).await;
    assert_eq!(
        w.body("x").await,
        first,
        "served stale while one refresh runs"
    );
    settle().await;
    assert_eq!(w.origin.calls(), 2);
    assert_ne!(w.body("x").await, first, "the refreshed entry");
}

async fn cache_stale_if_error(scope: Scope) {
    let w = World::new(Setup::new(scope, "cache.stale_if_error", "\"20s\""));
    let first = w.body("x").await;
    time::sleep(secs(1)).await;
    w.origin.answer(false);
    assert_eq!(w.body("x").await, first, "the stale entry stands in");
    assert_eq!(w.origin.calls(), 2);
}

async fn cache_max_bytes(scope: Scope) {
    global_only(scope);
    // Less than any entry weighs: nothing is stored.
    let w = World::new(Setup::new(scope, "cache.max_bytes", "100"));
    let first = w.body("x").await;
    assert_ne!(w.body("x").await, first);
    assert_eq!(w.origin.calls(), 2);
}

async fn cache_max_entries(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "cache.max_entries", "1"));
    w.body("a").await;
    w.body("a").await;
    assert_eq!(w.origin.calls(), 1);
    w.body("b").await;
    w.body("a").await;
    assert_eq!(w.origin.calls(), 3, "b took a's place");
}

async fn cache_mode(scope: Scope) {
    // The origin sends no freshness information: in origin mode its
    // answers are not stored; in app mode the ttl keeps them.
    let w = World::new(Setup::new(scope, "cache.mode", "\"origin\""));
    w.body("x").await;
    w.body("x").await;
    assert_eq!(w.origin.calls(), 2, "nothing the origin allows is stored");
    if scope == Scope::Class {
        w.call("/g/x", None).await.unwrap();
        w.call("/g/x", None).await.unwrap();
        assert_eq!(w.origin.calls_to("/g/x").len(), 1, "app mode elsewhere");
    }
}

async fn cache_sweep_interval(scope: Scope) {
    global_only(scope);
    // Expired at 50 ms (the test ttl); nobody asks again: only the sweep
    // frees it.
    let w = World::new(Setup::new(scope, "cache.sweep_interval", "\"10s\""));
    let memory = || w.coordinator.stats().snapshot().memory["cache"];
    w.body("x").await;
    assert!(memory() > 0);
    time::sleep(secs(9)).await;
    settle().await;
    assert!(memory() > 0, "not swept before the interval");
    time::sleep(secs(2)).await;
    settle().await;
    assert_eq!(memory(), 0, "swept, and the memory figure dropped");
}

// -------------------------------------------------------------------- [keys]

/// A server-side GET (no authority in the URI) with a `Host` header.
async fn get_for_host(w: &World, path: &str, host: &str) -> StatusCode {
    let req = Request::get(path)
        .header(http::header::HOST, host)
        .body(Full::default())
        .unwrap();
    let res: Response<HttpBody<Full<Bytes>>> = w.svc.clone().oneshot(req).await.unwrap();
    res.status()
}

async fn keys_hosts(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "keys.hosts", "[\"app.test\"]"));
    for host in ["app.test", "APP.test:8080", "evil.test", "evil.test"] {
        assert_eq!(get_for_host(&w, "/g/x", host).await, StatusCode::OK);
    }
    // The listed host (any case, any port) is one key and cached; the
    // other passes through, uncoordinated, each time.
    assert_eq!(w.origin.calls_to("/g/x").len(), 3);
}

/// Calls `path` as ann and bob, who differ only in `X-Api-Key`; the
/// upstream calls made.
async fn api_key_calls(w: &World, path: &str) -> usize {
    for key in ["ann", "bob", "ann", "bob"] {
        let answer = w.call(path, Some(("x-api-key", key))).await;
        assert_eq!(letter(&answer), 'S');
    }
    w.origin.calls_to(path).len()
}

async fn keys_max_len(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "keys.max_len", "1024"));
    // A query longer than `max_len` alone: the key's length must not
    // depend on which headers are absent.
    let long = format!("x?{}", "q".repeat(1_100));
    let refused = w.subscribe(&w.setup.path(&long)).unwrap_err();
    assert_eq!(refused.reason(), Limit::KeyTooLong);
    assert_eq!(
        w.subscribe(&elsewhere(&w, &long)).unwrap_err().reason(),
        Limit::KeyTooLong
    );
    // One-shot calls pass the Cache and Dedup uncoordinated: each makes
    // its own upstream call, where a short key is cached.
    for _ in 0..2 {
        w.body(&long).await;
        w.body("short").await;
    }
    assert_eq!(w.origin.calls_to(&w.setup.path("x")).len(), 2);
    assert_eq!(w.origin.calls_to(&w.setup.path("short")).len(), 1);
}

async fn keys_vary(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "keys.vary", "[\"x-api-key\"]"));
    assert_eq!(api_key_calls(&w, "/g/x").await, 2, "one answer per key");
    assert_eq!(api_key_calls(&w, "/c/x").await, 2, "in every class");
}

async fn class_vary(scope: Scope) {
    assert_eq!(scope, Scope::Class);
    let w = World::new(Setup::new(scope, "vary", "[\"x-api-key\"]"));
    assert_eq!(api_key_calls(&w, "/c/x").await, 2, "one answer per key");
    assert_eq!(api_key_calls(&w, "/g/x").await, 1, "other classes share");
}

// ------------------------------------------------------------------- [dedup]

async fn dedup_window(scope: Scope) {
    let w = World::new(Setup::new(scope, "dedup.window", "\"10s\"").also("layers.cache", "false"));
    let first = w.body("x").await;
    time::sleep(secs(5)).await;
    assert_eq!(w.body("x").await, first, "reused within the window");
    assert_eq!(w.origin.calls(), 1);
}

// ----------------------------------------------------------------- [breaker]

/// The breaker's key set in `scope`, with the cache off so that every call
/// reaches the breaker.
fn breaker(scope: Scope, key: &str, value: &str) -> Setup {
    Setup::new(scope, key, value).also("layers.cache", "false")
}

async fn breaker_window(scope: Scope) {
    // The last 6 calls hold 3 failures (the last 10 only 3): the rate trips.
    let w = World::new(breaker(scope, "breaker.window", "6"));
    assert_eq!(w.run("SSSSSFSFSFS").await, "SSSSSFSFSFO");
}

async fn breaker_time_window(scope: Scope) {
    // Half of the last 8 calls failed (the count window of 10 would trip),
    // but only 4 were in the last 10 s: fewer than minimum_calls.
    let w = World::new(breaker(scope, "breaker.time_window", "\"10s\""));
    assert_eq!(w.run("FSFS").await, "FSFS");
    time::sleep(secs(20)).await;
    assert_eq!(w.run("SFSFS").await, "SFSFS");
}

async fn breaker_minimum_calls(scope: Scope) {
    let w = World::new(breaker(scope, "breaker.minimum_calls", "2"));
    assert_eq!(w.run("FSFS").await, "FSFO");
}

async fn breaker_failure_rate(scope: Scope) {
    let w = World::new(breaker(scope, "breaker.failure_rate", "0.2"));
    assert_eq!(w.run("SSSSFS").await, "SSSSFO");
}

async fn breaker_consecutive_failures(scope: Scope) {
    let w = World::new(breaker(scope, "breaker.consecutive_failures", "2"));
    assert_eq!(w.run("FFS").await, "FFO");
}

async fn breaker_slow_call_duration(scope: Scope) {
    let w = World::new(breaker(scope, "breaker.slow_call_duration", "\"100ms\""));
    w.origin.delay(ms(200));
    assert_eq!(w.run("SSSSSS").await, "SSSSSO", "every call is slow");
}

async fn breaker_slow_call_rate(scope: Scope) {
    let w = World::new(
        breaker(scope, "breaker.slow_call_rate", "0.2")
            .also("breaker.slow_call_duration", "\"100ms\""),
    );
    assert_eq!(w.run("SSSS").await, "SSSS");
    w.origin.delay(ms(200));
    assert_eq!(w.run("S").await, "S", "one slow call in five");
    w.origin.delay(Duration::ZERO);
    assert_eq!(w.run("S").await, "O");
}

async fn breaker_open_duration(scope: Scope) {
    let w = World::new(
        breaker(scope, "breaker.open_duration", "\"10s\"")
            .also("breaker.max_open_duration", "\"10s\""),
    );
    assert_eq!(w.run("FFF").await, "FFF");
    time::sleep(secs(5)).await;
    assert_eq!(w.run("S").await, "O");
    time::sleep(secs(6)).await;
    assert_eq!(w.run("S").await, "S");
}

async fn breaker_backoff(scope: Scope) {
    // The second trip opens for 100 ms × 10 (the test profile: 100 ms, and
    // a cap of 1 s).
    let w = World::new(breaker(scope, "breaker.backoff", "10.0"));
    assert_eq!(w.run("FFF").await, "FFF");
    time::sleep(ms(150)).await;
    assert_eq!(w.run("F").await, "F", "the probe fails");
    time::sleep(ms(500)).await;
    assert_eq!(w.run("S").await, "O");
    time::sleep(ms(600)).await;
    assert_eq!(w.run("S").await, "S");
}

async fn breaker_max_open_duration(scope: Scope) {
    // The second trip would open for 200 ms; the cap holds it to 100 ms.
    let w = World::new(breaker(scope, "breaker.max_open_duration", "\"100ms\""));
    assert_eq!(w.run("FFF").await, "FFF");
    time::sleep(ms(150)).await;
    assert_eq!(w.run("F").await, "F", "the probe fails");
    time::sleep(ms(150)).await;
    assert_eq!(w.run("S").await, "S");
}

async fn breaker_jitter(scope: Scope) {
    let w = World::new(
        breaker(scope, "breaker.jitter", "1.0")
            .also("breaker.open_duration", "\"1000s\"")
            .also("breaker.max_open_duration", "\"1000s\""),
    );
    assert_eq!(w.run("FFF").await, "FFF");
    w.origin.answer(true);
    let err = w.get("x").await.unwrap_err();
    let open = find::<BreakerOpen>(&*err).unwrap();
    let retry = open.retry_after().unwrap();
    assert!(
        retry > secs(1000) && retry < secs(2000),
        "1000 s plus up to 100 %: {retry:?}"
    );
}

async fn breaker_half_open_probes(scope: Scope) {
    let w = World::new(breaker(scope, "breaker.half_open_probes", "2"));
    assert_eq!(w.run("FFF").await, "FFF");
    time::sleep(ms(150)).await;
    w.origin.answer(true);
    w.origin.delay(ms(50));
    assert_eq!(
        w.concurrent(&["p1", "p2"]).await,
        "SS",
        "two probes at once"
    );
}

async fn breaker_probe_timeout(scope: Scope) {
    let w = World::new(breaker(scope, "breaker.probe_timeout", "\"50ms\""));
    assert_eq!(w.run("FFF").await, "FFF");
    time::sleep(ms(150)).await;
    w.origin.delay(ms(200));
    assert_eq!(w.run("S").await, "T");
}

// ------------------------------------------------------------------- [limit]

async fn limit_max_concurrency(scope: Scope) {
    let w = World::new(Setup::new(scope, "limit.max_concurrency", "1"));
    w.origin.delay(ms(50));
    assert_eq!(w.concurrent(&["a", "b"]).await, "LS");
}

async fn limit_max_queue(scope: Scope) {
    let w =
        World::new(Setup::new(scope, "limit.max_queue", "1").also("limit.max_concurrency", "1"));
    w.origin.delay(ms(50));
    assert_eq!(w.concurrent(&["a", "b", "c"]).await, "LSS", "one waits");
}

async fn limit_max_wait(scope: Scope) {
    let w = World::new(
        Setup::new(scope, "limit.max_wait", "\"10ms\"")
            .also("limit.max_concurrency", "1")
            .also("limit.max_queue", "1"),
    );
    w.origin.delay(ms(50));
    let answers = join_all([w.get("a"), w.get("b")]).await;
    let waited = answers
        .iter()
        .find_map(|a| a.as_ref().err())
        .expect("one call gave up waiting");
    assert!(find::<Overloaded>(&**waited).unwrap().timed_out());
}

async fn limit_retry_after(scope: Scope) {
    let w = World::new(
        Setup::new(scope, "limit.retry_after", "\"7s\"").also("limit.max_concurrency", "1"),
    );
    w.origin.delay(ms(50));
    let answers = join_all([w.get("a"), w.get("b")]).await;
    let refused = answers.iter().find_map(|a| a.as_ref().err()).unwrap();
    let hint = find::<Overloaded>(&**refused).unwrap().retry_after();
    assert!(hint > secs(5) && hint <= secs(7), "{hint:?}");
}

/// Concurrent calls' letters, sorted.
async fn letters(calls: Vec<impl Future<Output = char>>) -> String {
    let mut letters = join_all(calls).await;
    letters.sort_unstable();
    letters.into_iter().collect()
}

async fn limit_max_concurrency_per_caller(scope: Scope) {
    let w = World::new(Setup::new(scope, "limit.max_concurrency_per_caller", "1"));
    w.origin.delay(ms(50));
    let (a, b, c) = (w.setup.path("a"), w.setup.path("b"), w.setup.path("c"));
    let calls = vec![
        w.call_from("10.0.0.1", &a, "ann"),
        w.call_from("10.0.0.1", &b, "ann"),
        w.call_from("10.0.0.1", &c, "bob"),
    ];
    assert_eq!(letters(calls).await, "CSS", "ann's second call is refused");
    if scope == Scope::Class {
        let calls = vec![
            w.call_from("10.0.0.1", "/g/a", "ann"),
            w.call_from("10.0.0.1", "/g/b", "ann"),
        ];
        assert_eq!(letters(calls).await, "SS", "a quarter of 32 elsewhere");
    }
}

async fn limit_max_concurrency_per_address(scope: Scope) {
    let w = World::new(Setup::new(scope, "limit.max_concurrency_per_address", "1"));
    w.origin.delay(ms(50));
    let (a, b, c) = (w.setup.path("a"), w.setup.path("b"), w.setup.path("c"));
    let calls = vec![
        w.call_from("10.0.0.1", &a, "ann"),
        w.call_from("10.0.0.1", &b, "bob"),
        w.call_from("10.0.0.2", &c, "bob"),
    ];
    assert_eq!(letters(calls).await, "CSS", "one call per address");
    if scope == Scope::Class {
        let calls = vec![
            w.call_from("10.0.0.1", "/g/a", "ann"),
            w.call_from("10.0.0.1", "/g/b", "bob"),
        ];
        assert_eq!(letters(calls).await, "SS", "half of 32 elsewhere");
    }
}

async fn rate_per_second(scope: Scope) {
    let w = World::new(Setup::new(scope, "limit.rate.per_second", "1"));
    assert_eq!(w.concurrent(&["a"]).await, "S");
    assert_eq!(w.concurrent(&["b"]).await, "R");
    time::sleep(secs(1)).await;
    assert_eq!(w.concurrent(&["c"]).await, "S");
}

async fn rate_per_minute(scope: Scope) {
    let w = World::new(Setup::new(scope, "limit.rate.per_minute", "1"));
    assert_eq!(w.concurrent(&["a"]).await, "S");
    time::sleep(secs(2)).await;
    assert_eq!(w.concurrent(&["b"]).await, "R");
    time::sleep(secs(60)).await;
    assert_eq!(w.concurrent(&["c"]).await, "S");
}

async fn rate_burst(scope: Scope) {
    let w =
        World::new(Setup::new(scope, "limit.rate.burst", "3").also("limit.rate.per_minute", "1"));
    assert_eq!(w.concurrent(&["a", "b", "c", "d"]).await, "RSSS");
}

async fn rate_by(scope: Scope) {
    let w = World::new(
        Setup::new(scope, "limit.rate.by", "\"identity\"").also("limit.rate.per_minute", "1"),
    );
    let path = w.setup.path("x");
    let as_user = |user: &'static str| w.call(&path, Some(("authorization", user)));
    assert_eq!(letter(&as_user("ann").await), 'S');
    assert_eq!(letter(&as_user("bob").await), 'S', "a budget per caller");
    let path = w.setup.path("y");
    let again = w.call(&path, Some(("authorization", "ann"))).await;
    assert_eq!(letter(&again), 'R');
}

async fn rate_alert_only(scope: Scope) {
    let w = World::new(
        Setup::new(scope, "limit.rate.alert_only", "true").also("limit.rate.per_minute", "1"),
    );
    assert_eq!(w.concurrent(&["a", "b", "c"]).await, "SSS");
}

async fn rate_max_keys(scope: Scope) {
    let w = World::new(
        Setup::new(scope, "limit.rate.max_keys", "1")
            .also("limit.rate.per_minute", "1")
            .also("limit.rate.by", "\"identity\""),
    );
    // A new path for each call: none is answered by the cache.
    let w = &w;
    let call = |path: &str, user: &'static str| {
        let path = w.setup.path(path);
        async move { letter(&w.call(&path, Some(("authorization", user))).await) }
    };
    assert_eq!(call("a", "ann").await, 'S');
    assert_eq!(call("b", "ann").await, 'R', "ann's budget is kept");
    assert_eq!(call("c", "bob").await, 'S');
    assert_eq!(
        call("d", "bob").await,
        'S',
        "the store is full: bob passes untracked"
    );
}

// ------------------------------------------------------------------ [alerts]

/// An alerts key, with the cache and the breaker off so that every request
/// reaches the upstream and every failure counts.
fn alerts(scope: Scope, key: &str, value: &str) -> Setup {
    global_only(scope);
    Setup::new(scope, key, value)
        .global("layers.cache", "false")
        .global("layers.breaker", "false")
}

async fn alerts_upstream_calls(scope: Scope) {
    let w = World::new(alerts(scope, "alerts.upstream_calls_per_minute", "2"));
    for _ in 0..3 {
        w.body("x").await;
    }
    assert!(w.alert(AlertRule::UpstreamCalls));
}

async fn alerts_memory_bytes(scope: Scope) {
    global_only(scope);
    let w = World::new(Setup::new(scope, "alerts.memory_bytes", "1"));
    w.body("x").await;
    assert!(w.alert(AlertRule::Memory));
}

async fn alerts_error_rate(scope: Scope) {
    // One failure in 40 requests: 2.5 %, under the default 5 %.
    let w = World::new(alerts(scope, "alerts.error_rate", "0.01"));
    assert_eq!(w.run("F").await, "F");
    assert_eq!(w.run(&"S".repeat(39)).await, "S".repeat(39));
    assert!(w.alert(AlertRule::ErrorRate));
}

async fn alerts_error_window(scope: Scope) {
    let w = World::new(alerts(scope, "alerts.error_window", "\"5m\""));
    assert_eq!(w.run(&"FS".repeat(10)).await, "FS".repeat(10));
    assert!(w.alert(AlertRule::ErrorRate));
    time::sleep(secs(120)).await;
    assert!(
        w.alert(AlertRule::ErrorRate),
        "the failures of 2 minutes ago are still in the window"
    );
}

async fn alerts_min_samples(scope: Scope) {
    let w = World::new(alerts(scope, "alerts.min_samples", "2"));
    assert_eq!(w.run("FS").await, "FS");
    assert!(w.alert(AlertRule::ErrorRate));
}

async fn alerts_breaker_trips(scope: Scope) {
    global_only(scope);
    let w = World::new(
        Setup::new(scope, "alerts.breaker_trips", "false").global("layers.cache", "false"),
    );
    assert_eq!(w.run("FFFS").await, "FFFO");
    assert!(!w.alert(AlertRule::BreakerTrip));
}

async fn alerts_resolve_ratio(scope: Scope) {
    // Fires at a rate over 0.5 (2 of 2 failed). At 2 of 4 the rate is back
    // at the threshold: that resolves with a ratio of 1.0, not with the
    // default 0.8 (which waits for 0.4).
    let w = World::new(
        alerts(scope, "alerts.resolve_ratio", "1.0")
            .global("alerts.error_rate", "0.5")
            .global("alerts.min_samples", "2"),
    );
    assert_eq!(w.run("FF").await, "FF");
    assert!(w.alert(AlertRule::ErrorRate));
    assert_eq!(w.run("SS").await, "SS");
    assert!(!w.alert(AlertRule::ErrorRate), "resolved at the threshold");
}

// ------------------------------------------------------------------- [admin]

async fn admin_token(scope: Scope) {
    global_only(scope);
    let token = "0123456789abcdef0123";
    let w = World::new(Setup::new(scope, "admin.token", &format!("\"{token}\"")));
    // The admin routes (herdsman_axum::Admin::builder) take it from here.
    let config = w.coordinator.config();
    assert_eq!(config.admin.token.as_deref(), Some(token));
    assert!(!config.redacted().to_toml().contains(token));
    let refused = Setup::new(scope, "admin.token", "\"short\"").refusal();
    assert!(
        refused.starts_with("admin.token = \"<redacted>\": must be at least 16 characters"),
        "{refused}"
    );
}

// ----------------------------------------------------------------- [rollout]

async fn rollout_percent(scope: Scope) {
    global_only(scope);
    // No caller is admitted: every request goes straight to the upstream.
    let w = World::new(Setup::new(scope, "rollout.percent", "0"));
    let first = w.body("x").await;
    assert_ne!(w.body("x").await, first);
}

/// With no one admitted by percentage, caller `ann` (named by the `x-user`
/// header) is allowed in: her second GET is a cache hit; bob's is not.
/// `key` is one of the two keys this needs; the other is set too.
async fn rollout_admits_ann(scope: Scope, key: &str) {
    global_only(scope);
    let value = |key: &str| match key {
        "rollout.allow" => "[\"ann\"]",
        _ => "\"x-user\"",
    };
    let other = match key {
        "rollout.allow" => "rollout.identity_header",
        _ => "rollout.allow",
    };
    let w = World::new(
        Setup::new(scope, key, value(key))
            .global(other, value(other))
            .global("rollout.percent", "0"),
    );
    for (user, calls) in [("ann", 1), ("bob", 2)] {
        let path = format!("/g/{user}");
        for _ in 0..2 {
            let answer = w.call(&path, Some(("x-user", user))).await;
            assert_eq!(letter(&answer), 'S');
        }
        assert_eq!(w.origin.calls_to(&path).len(), calls, "{user}");
    }
}

// ------------------------------------------------------------------ [server]

/// A `[server]` key: loaded as written, or refused naming the key. The
/// server (`herdsman_axum::Server::from_settings`) is not in this crate:
/// `crates/herdsman-axum/tests/serve.rs` checks that each setting takes
/// effect on a connection.
async fn server_key(scope: Scope, key: &str, value: &str, (bad, reason): (&str, &str)) {
    global_only(scope);
    let setup = Setup::new(scope, key, value);
    let config = setup.coordinator().config().clone();
    // Read by herdsman-axum's server, or herdsman-redis's backends.
    let leaf = key.split_once('.').unwrap().1;
    let shown = config.to_toml();
    assert!(
        shown.contains(&format!("{leaf} = {value}")),
        "{key} = {value} not in force:\n{shown}"
    );
    let refused = Setup::new(scope, key, bad).refusal();
    let bad = bad.replace("[", "").replace("]", "");
    assert!(
        refused.starts_with(&format!("{key} = {bad}: {reason}")),
        "{refused}"
    );
}

// ------------------------------------------------------------------- [redis]

/// A Redis URL takes effect: the Coordinator refuses to build without the
/// backends it names (never a silent in-process fallback); a URL of
/// another scheme is refused at load.
async fn redis_url(scope: Scope) {
    global_only(scope);
    let setup = Setup::new(scope, "redis.url", "\"redis://127.0.0.1:6379/0\"");
    let config = setup.load().unwrap();
    assert_eq!(
        config.redis.url.as_deref(),
        Some("redis://127.0.0.1:6379/0")
    );
    let err = Coordinator::builder()
        .environment(setup.env)
        .config(config)
        .build()
        .unwrap_err();
    assert_eq!(err.problems()[0].path, "redis.url");
    let refused = Setup::new(scope, "redis.url", "\"http://127.0.0.1:6379\"").refusal();
    assert!(
        refused.starts_with("redis.url = \"http://127.0.0.1:6379\": is not a Redis URL"),
        "{refused}"
    );
}

/// Read by the breaker's shared trips (herdsman-redis): in force, and a
/// value that is no boolean is refused naming the key.
async fn redis_share_breaker(scope: Scope) {
    global_only(scope);
    let setup = Setup::new(scope, "redis.share_breaker", "true");
    assert!(setup.coordinator().config().redis.share_breaker);
    let refused = Setup::new(scope, "redis.share_breaker", "\"yes\"").refusal();
    assert!(refused.starts_with("redis.share_breaker"), "{refused}");
}

// ----------------------------------------------------------------- [classes]

async fn class_paths(scope: Scope) {
    assert_eq!(scope, Scope::Class);
    let w = World::new(Setup::new(scope, "paths", "[\"/d/*\"]"));
    let _d = w.subscribe("/d/x").unwrap();
    let _c = w.subscribe("/c/x").unwrap();
    let mut classes: Vec<(String, String)> = w
        .coordinator
        .registry()
        .hooks()
        .iter()
        .map(|h| {
            let path = String::from_utf8(h.key.path().unwrap().to_vec()).unwrap();
            (path, h.class.to_string())
        })
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        [
            ("/c/x".to_owned(), "default".to_owned()),
            ("/d/x".to_owned(), "c".to_owned())
        ]
    );
}

async fn class_public(scope: Scope) {
    assert_eq!(scope, Scope::Class);
    let w = World::new(Setup::new(scope, "public", "true"));
    let path = w.setup.path("x");
    let ann = w.call(&path, Some(("authorization", "ann"))).await.unwrap();
    let bob = w.call(&path, Some(("authorization", "bob"))).await.unwrap();
    assert_eq!(ann, bob, "one answer for both");
    assert_eq!(w.origin.calls(), 1);
}
