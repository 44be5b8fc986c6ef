//! Safe by default: the server binds to 127.0.0.1 unless configured otherwise; bound anywhere
//! else, every request to the dashboard and the API needs the token (`Authorization: Bearer`
//! or the cookie `/login?token=...` sets), and every state-changing request needs the
//! `X-Swarm-Csrf` header, which a cross-site form cannot send.

use axum::extract::{Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::WebState;

pub const CSRF_HEADER: &str = "x-swarm-csrf";
const COOKIE: &str = "swarm_token";

/// Whether `listen` is on this machine only.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen
        .rsplit_once(':')
        .map_or(listen, |(h, _)| h)
        .trim_matches(['[', ']']);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn token_of(req: &Request) -> Option<String> {
    let h = req.headers();
    if let Some(b) = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(b.trim().to_string());
    }
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Constant-time equality of two tokens.
fn same(a: &str, b: &str) -> bool {
    use hmac::Mac;
    let mac = |s: &str| {
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"swarm-token-compare")
            .expect("any key size");
        m.update(s.as_bytes());
        m
    };
    mac(a).verify_slice(&mac(b).finalize().into_bytes()).is_ok()
}

/// Whether the request names this machine as its host: on a loopback bind without a token,
/// this stops a web page from reaching the dashboard through DNS rebinding.
fn local_host(req: &Request) -> bool {
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let name = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    name == "localhost"
        || name
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub async fn guard(State(s): State<WebState>, req: Request, next: Next) -> Response {
    if s.api_token.is_none() && !local_host(&req) {
        return (
            StatusCode::FORBIDDEN,
            "without SWARM_API_TOKEN, the dashboard answers only to localhost\n",
        )
            .into_response();
    }
    if let Some(expected) = &s.api_token {
        match token_of(&req) {
            Some(t) if same(&t, expected) => {}
            _ => {
                return (
                    StatusCode::UNAUTHORIZED,
                    "a token is needed: open /login?token=... or send Authorization: Bearer ...\n",
                )
                    .into_response()
            }
        }
    }
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes && !req.headers().contains_key(CSRF_HEADER) {
        return (
            StatusCode::FORBIDDEN,
            "state-changing requests need the X-Swarm-Csrf header\n",
        )
            .into_response();
    }
    next.run(req).await
}

#[derive(serde::Deserialize)]
pub struct Login {
    token: String,
}

/// Sets the token cookie and goes to the overview.
pub async fn login(State(s): State<WebState>, Query(q): Query<Login>) -> Response {
    match &s.api_token {
        Some(t) if same(&q.token, t) => {
            let cookie = format!("{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/", q.token);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
        }
        Some(_) => (StatusCode::UNAUTHORIZED, "wrong token\n").into_response(),
        None => Redirect::to("/").into_response(),
    }
}
