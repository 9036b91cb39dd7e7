//! The simulated board app: the upstream that herdsman protects. Each
//! handler counts its own calls, waits the configured latency, and fails at
//! the configured rate.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, SystemTime},
};

use axum::{
    extract::{Path, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The upstream endpoints, for [`Upstream::calls`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/active-users`
    ActiveUsers,
    /// `GET /api/boards/{board}/events`
    BoardEvents,
    /// `POST /api/boards/{board}/cards`
    Cards,
    /// `GET /api/me`
    Me,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 4] = [
        Endpoint::ActiveUsers,
        Endpoint::BoardEvents,
        Endpoint::Cards,
        Endpoint::Me,
    ];

    /// Its name in `GET /upstream/calls`.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ActiveUsers => "active-users",
            Endpoint::BoardEvents => "board-events",
            Endpoint::Cards => "cards",
            Endpoint::Me => "me",
        }
    }
}

/// One card event on a board.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardEvent {
    /// Increasing per process.
    pub id: u64,
    /// The card's title.
    pub card: String,
    /// What happened (`added`, `moved`, ...).
    pub action: String,
    /// When (HTTP date).
    pub at: String,
}

/// The body of `POST /api/boards/{board}/cards`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCard {
    /// The card's title.
    pub card: String,
    /// What happened (default `added`).
    #[serde(default)]
    pub action: Option<String>,
}

/// The simulated upstream. Clones share its state.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<State_>,
}

struct State_ {
    calls: [AtomicU64; 4],
    users: Mutex<Vec<String>>,
    boards: Mutex<HashMap<String, Vec<CardEvent>>>,
    next_id: AtomicU64,
    latency: Duration,
    /// The failure rate, as `f64` bits.
    fail_rate: AtomicU64,
    rng: AtomicU64,
}

const BOARD_EVENTS_KEPT: usize = 50;
const CARD_MAX_LEN: usize = 200;

impl Upstream {
    /// An upstream answering after `latency`, failing at `fail_rate` (0 to 1).
    pub fn new(latency: Duration, fail_rate: f64) -> Self {
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let upstream = Upstream {
            inner: Arc::new(State_ {
                calls: Default::default(),
                users: Mutex::new(["ann", "bob", "chen", "dara"].map(String::from).to_vec()),
                boards: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                latency,
                fail_rate: AtomicU64::new(0),
                rng: AtomicU64::new(seed),
            }),
        };
        upstream.set_fail_rate(fail_rate);
        upstream
    }

    /// Real calls of one endpoint's handler so far.
    pub fn calls(&self, endpoint: Endpoint) -> u64 {
        self.inner.calls[endpoint as usize].load(Ordering::SeqCst)
    }

    /// The injected failure rate.
    pub fn fail_rate(&self) -> f64 {
        f64::from_bits(self.inner.fail_rate.load(Ordering::Relaxed))
    }

    /// Changes the injected failure rate (clamped to 0..=1).
    pub fn set_fail_rate(&self, rate: f64) {
        self.inner
            .fail_rate
            .store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// Replaces the set of active users.
    pub fn set_users(&self, users: impl IntoIterator<Item = impl Into<String>>) {
        *lock(&self.inner.users) = users.into_iter().map(Into::into).collect();
    }

    /// Simulates someone arriving or leaving: takes one name out of the
    /// list, or puts a new one in.
    pub fn churn(&self) {
        const NAMES: [&str; 10] = [
            "ann", "bob", "chen", "dara", "eli", "fay", "gus", "hana", "ivo", "jo",
        ];
        let pick = NAMES[(self.random() * NAMES.len() as f64) as usize % NAMES.len()];
        let mut users = lock(&self.inner.users);
        match users.iter().position(|u| u == pick) {
            Some(i) if users.len() > 1 => {
                users.remove(i);
            }
            Some(_) => {}
            None => users.push(pick.to_owned()),
        }
    }

    /// Every endpoint's real calls so far, by name (`active-users`,
    /// `board-events`, `cards`, `me`): the body of `GET /upstream/calls`.
    pub fn calls_json(&self) -> serde_json::Value {
        let mut calls = serde_json::Map::new();
        for endpoint in Endpoint::ALL {
            calls.insert(endpoint.name().to_owned(), self.calls(endpoint).into());
        }
        serde_json::Value::Object(calls)
    }

    /// The upstream served alone (`active-users --upstream-only`): its
    /// routes, and `GET /upstream/calls` with [`Upstream::calls_json`], so
    /// that replicas elsewhere can call it and a script can count what
    /// reached it.
    pub fn standalone_router(&self) -> Router {
        let up = self.clone();
        self.router().route(
            "/upstream/calls",
            get(move || async move { Json(up.calls_json()) }),
        )
    }

    /// Simulates arrivals and departures ([`Upstream::churn`]) every
    /// `every`, in a task of its own (the first one `every` from now).
    pub fn spawn_churn(&self, every: Duration) {
        let up = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                up.churn();
            }
        });
    }

    /// The upstream's routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/active-users", get(active_users))
            .route("/api/boards/{board}/events", get(board_events))
            .route("/api/boards/{board}/cards", post(add_card))
            .route("/api/me", get(me))
            .with_state(self.clone())
    }

    /// xorshift64*: fault injection needs no better.
    fn random(&self) -> f64 {
        let mut x = self.inner.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.inner.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Counts the call, waits the latency, and fails at the failure rate.
    async fn enter(&self, endpoint: Endpoint) -> Result<(), Response> {
        self.inner.calls[endpoint as usize].fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.inner.latency).await;
        let rate = self.fail_rate();
        if rate > 0.0 && self.random() < rate {
            return Err((
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "injected failure"})),
            )
                .into_response());
        }
        Ok(())
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("latency", &self.inner.latency)
            .field("active_users_calls", &self.calls(Endpoint::ActiveUsers))
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn active_users(State(up): State<Upstream>) -> Response {
    if let Err(r) = up.enter(Endpoint::ActiveUsers).await {
        return r;
    }
    let users = lock(&up.inner.users).clone();
    Json(json!({"count": users.len(), "users": users})).into_response()
}

async fn board_events(State(up): State<Upstream>, Path(board): Path<String>) -> Response {
    if let Err(r) = up.enter(Endpoint::BoardEvents).await {
        return r;
    }
    let events = lock(&up.inner.boards)
        .get(&board)
        .cloned()
        .unwrap_or_default();
    Json(events).into_response()
}

async fn add_card(
    State(up): State<Upstream>,
    Path(board): Path<String>,
    Json(new): Json<NewCard>,
) -> Response {
    if let Err(r) = up.enter(Endpoint::Cards).await {
        return r;
    }
    if new.card.trim().is_empty() || new.card.len() > CARD_MAX_LEN {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "a card needs a title of 1 to 200 bytes",
        )
            .into_response();
    }
    let event = CardEvent {
        id: up.inner.next_id.fetch_add(1, Ordering::SeqCst),
        card: new.card,
        action: new
            .action
            .filter(|a| !a.is_empty() && a.len() <= 32)
            .unwrap_or_else(|| "added".to_owned()),
        at: httpdate::fmt_http_date(SystemTime::now()),
    };
    let mut boards = lock(&up.inner.boards);
    let events = boards.entry(board).or_default();
    events.insert(0, event.clone());
    events.truncate(BOARD_EVENTS_KEPT);
    (StatusCode::CREATED, Json(event)).into_response()
}

async fn me(State(up): State<Upstream>, headers: HeaderMap) -> Response {
    if let Err(r) = up.enter(Endpoint::Me).await {
        return r;
    }
    let name = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 64);
    match name {
        Some(name) => Json(json!({"name": name})).into_response(),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "send Authorization: Bearer <your name>",
        )
            .into_response(),
    }
}
