//! Who may use the admin routes (stats, metrics, switches).

use std::{fmt, net::SocketAddr, sync::Arc};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderValue, Response, StatusCode},
    middleware::Next,
};
use herdsman::{config::Environment, http::ClientAddr};

/// The admin routes' access rule.
///
/// - In production and docker, a request needs `Authorization: Bearer
///   <token>` with the configured token. With no token configured, admin
///   routes are closed.
/// - In development and test, they are open to loopback clients only. The
///   client is the request's [`ClientAddr`], which [`Server`](crate::Server)
///   inserts (the peer, or behind a trusted proxy the client it names),
///   else axum's `ConnectInfo<SocketAddr>` (axum's
///   `into_make_service_with_connect_info::<SocketAddr>()`); without either
///   they are closed. A loopback peer whose request still carries
///   `Forwarded`, `X-Forwarded-For` or `X-Real-IP` (a proxy on the same
///   host that is not among `server.trusted_proxies`) is refused: every
///   request through it would look local. List that proxy, or give the
///   setup a token.
///
/// Refusals are 403 with a one-line reason.
#[derive(Clone)]
pub struct AdminAccess {
    rule: Rule,
}

#[derive(Clone)]
enum Rule {
    Token(Option<Arc<str>>),
    Loopback,
}

impl AdminAccess {
    /// The rule for `environment`, with the configured token (if any).
    pub fn for_environment(environment: Environment, token: Option<&str>) -> Self {
        let token = token.filter(|t| !t.is_empty()).map(Arc::from);
        let rule = match environment {
            Environment::Production | Environment::Docker => {
                if token.is_none() {
                    tracing::warn!(
                        environment = environment.as_str(),
                        "herdsman: no admin token configured; admin routes are closed"
                    );
                }
                Rule::Token(token)
            }
            _ => Rule::Loopback,
        };
        AdminAccess { rule }
    }

    /// Requires `token` whatever the environment.
    pub fn token(token: &str) -> Self {
        AdminAccess {
            rule: Rule::Token(Some(Arc::from(token))),
        }
    }

    /// Checks one request; `Err` carries the reason.
    pub fn check(&self, req: &Request) -> Result<(), &'static str> {
        match &self.rule {
            Rule::Token(None) => Err("admin routes are closed: no admin token is configured"),
            Rule::Token(Some(token)) => {
                let given = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim);
                match given {
                    Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(()),
                    Some(_) => Err("admin token is wrong"),
                    None => Err("admin token required"),
                }
            }
            Rule::Loopback => loopback(req),
        }
    }
}

/// The loopback rule: the client address is loopback, and no proxy that
/// the server did not resolve stands between.
fn loopback(req: &Request) -> Result<(), &'static str> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
    let Some(addr) = client.or(peer) else {
        return Err("admin routes need the peer address (serve with connect info)");
    };
    if !addr.ip().to_canonical().is_loopback() {
        return Err("admin routes are open to loopback only in this environment");
    }
    // The server put the client a trusted proxy named: that hop is believed.
    let resolved = matches!((client, peer), (Some(client), Some(peer)) if client != peer);
    let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| req.headers().contains_key(*name));
    if forwarded && !resolved {
        return Err(
            "admin routes are open to loopback only in this environment, and this \
             request came through a proxy that is not in server.trusted_proxies",
        );
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match &self.rule {
            Rule::Token(Some(_)) => "token",
            Rule::Token(None) => "closed",
            Rule::Loopback => "loopback",
        };
        f.debug_struct("AdminAccess").field("rule", &rule).finish()
    }
}

/// axum middleware enforcing [`AdminAccess`]:
/// `route_layer(middleware::from_fn_with_state(access, require_admin))`.
pub async fn require_admin(
    State(access): State<AdminAccess>,
    req: Request,
    next: Next,
) -> Response<Body> {
    match access.check(&req) {
        Ok(()) => next.run(req).await,
        Err(reason) => {
            let mut r = Response::new(Body::from(reason));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}
