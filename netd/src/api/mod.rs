//! The HTTP/JSON API, with Docker Engine API paths and shapes, so that the stock
//! `docker -H unix://...` CLI and Docker SDKs can drive netd, plus netd's own `/netd/*`.
//! Requests may carry Docker's version prefix (`/v1.41/networks`); it is stripped before
//! routing. Every error, a malformed body and an unknown path included, is Docker's
//! `{"message": ...}` with Docker's status code.
mod attach;
mod containers;
mod endpoints;
mod events;
mod exec;
mod filters;
mod info;
mod netd;
mod networks;
mod prune;
mod select;
mod system;
pub mod types;

use std::{collections::HashMap, sync::Arc};

pub use axum::Json;
use axum::{
    body::Body,
    extract::{rejection::JsonRejection, FromRequest, Request, State},
    http::{header::CONTENT_TYPE, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
    Router,
};
use serde::de::DeserializeOwned;

use crate::{daemon::Daemon, error::NetdError};

/// The Docker Engine API version netd speaks (docker CLIs negotiate down to it).
pub use crate::version::API_VERSION;

impl IntoResponse for NetdError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            Json(types::ErrorBody {
                message: self.to_string(),
            }),
        )
            .into_response()
    }
}

type D = State<Arc<Daemon>>;
type Q = axum::extract::Query<HashMap<String, String>>;

/// A JSON body whose rejection (malformed JSON, a wrong field type, a missing content
/// type) is a 400 with Docker's `{"message"}` body rather than axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = NetdError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(NetdError::InvalidArgument(match e {
                JsonRejection::JsonDataError(e) => {
                    format!("invalid request body: {}", e.body_text())
                }
                JsonRejection::JsonSyntaxError(e) => format!("malformed JSON: {}", e.body_text()),
                JsonRejection::MissingJsonContentType(_) => {
                    "the request body must be JSON (Content-Type: application/json)".into()
                }
                other => other.body_text(),
            })),
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn router(d: Arc<Daemon>) -> Router {
    Router::new()
        .route("/_ping", get(system::ping).head(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(info::info))
        .route("/events", get(events::events))
        .route("/system/df", get(system::df))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(prune::networks))
        .route("/containers/prune", post(prune::containers))
        .route("/images/prune", post(prune::images))
        .route("/build/prune", post(prune::build_cache))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/containers/json", get(containers::list))
        .route("/containers/{id}/json", get(containers::inspect))
        .route("/containers/{id}", delete(containers::remove))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/attach", post(attach::attach))
        .route("/containers/{id}/resize", post(attach::resize))
        .route("/containers/{id}/wait", post(attach::wait))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(attach::exec_resize))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/netd/run", post(netd::run))
        .route("/netd/stats", get(netd::stats))
        .route("/netd/trace", get(netd::trace))
        .route(
            "/netd/conntrack",
            get(netd::conntrack).delete(netd::flush_conntrack),
        )
        .merge(endpoints::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(d)
}

async fn not_found(uri: Uri) -> NetdError {
    NetdError::NotFound(format!("page not found: {}", uri.path()))
}

async fn method_not_allowed(uri: Uri) -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(types::ErrorBody {
            message: format!("method not allowed on {}", uri.path()),
        }),
    )
        .into_response()
}

/// The router behind a rewrite that drops Docker's `/vX.Y` path prefix.
pub fn service(d: Arc<Daemon>) -> axum::routing::IntoMakeService<Router> {
    let versioned = router(d)
        .route_layer(axum::middleware::from_fn(crate::metrics::api_latency))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::map_response(give_back_memory));
    Router::new()
        .fallback_service(
            tower::ServiceBuilder::new()
                .map_request(strip_version)
                .service(versioned),
        )
        .into_make_service()
}

/// Every error answer is Docker's `{"message": ...}`: the rejections axum writes itself
/// (a path segment that is not UTF-8, a body over the size limit) are plain text, so
/// their text is wrapped here.
async fn json_errors(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    let text = axum::body::to_bytes(r.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_lowercase()
    } else {
        text
    };
    (status, Json(types::ErrorBody { message })).into_response()
}

/// After each request, hands freed heap back to the OS. A request about a container with
/// thousands of ports builds large JSON trees; glibc would otherwise keep their memory
/// in its arenas, and the agent's RSS would stay at its high-water mark.
async fn give_back_memory(r: Response) -> Response {
    // SAFETY: malloc_trim only releases free memory; no pointer is involved.
    unsafe { libc::malloc_trim(0) };
    r
}

fn strip_version(mut req: Request<Body>) -> Request<Body> {
    let path = req.uri().path();
    if let Some(rest) = path.strip_prefix("/v") {
        if let Some(slash) = rest.find('/') {
            if rest[..slash]
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.')
                && slash > 0
            {
                let new_path = rest[slash..].to_string();
                let pq = match req.uri().query() {
                    Some(q) => format!("{new_path}?{q}"),
                    None => new_path,
                };
                if let Ok(uri) = pq.parse::<Uri>() {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}

/// Seconds since the epoch as RFC 3339 (UTC), as Docker prints creation times.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn version_prefix_is_stripped() {
        let r = strip_version(
            Request::builder()
                .uri("/v1.41/networks?filters=x")
                .body(Body::empty())
                .unwrap(),
        );
        assert_eq!(r.uri().to_string(), "/networks?filters=x");
        let r = strip_version(
            Request::builder()
                .uri("/version")
                .body(Body::empty())
                .unwrap(),
        );
        assert_eq!(r.uri().to_string(), "/version");
    }
}
