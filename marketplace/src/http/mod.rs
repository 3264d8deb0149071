//! The HTTP API: routes, their request and response types, and the mapping
//! of every error to problem+json ([`error`]); who is asking ([`access`]);
//! cursor pages ([`paging`]).

pub mod access;
pub mod admin;
pub mod books;
pub mod edge;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod offers;
pub mod openapi;
pub mod orders;
pub mod paging;
pub mod user_lists;
pub mod users;

use std::sync::Arc;

use axum::{
    extract::DefaultBodyLimit,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Router,
};
use bus_core::{Command, CommandBus, Envelope, QueryBus};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

use self::{
    access::Authentication,
    edge::{client_ip, request_id, EdgeLimits, InFlight, RateLimiter},
    error::ApiError,
    extract::TraceParent,
};

/// Largest accepted request body. An order of 50 items is about 4 KiB.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A check `/health/ready` runs besides the database (e.g. the broker).
pub type ReadinessCheck =
    Arc<dyn Fn() -> bus_core::BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// What every route handler shares.
#[derive(Clone)]
pub struct AppState {
    /// Where writes go.
    pub commands: Arc<dyn CommandBus>,
    /// Where reads go.
    pub queries: QueryBus,
    /// The database, for readiness checks.
    pub database: crate::store::Database,
    /// Extra readiness checks (shared: the state is cloned per request).
    pub readiness: Arc<[ReadinessCheck]>,
    /// Whether requests are authenticated (bearer tokens) or not (open mode).
    pub auth: Authentication,
    /// On a worker: its consumers, whose paused queues `/health/ready`
    /// lists. `None` on the API.
    pub consumers: Option<bus_rabbitmq::WorkerControl>,
}

impl AppState {
    /// Dispatches `command` as sent from the request's span (`trace`), so
    /// its handling continues the request's trace.
    pub async fn dispatch<C: Command>(
        &self,
        command: &C,
        trace: TraceParent,
    ) -> Result<(), ApiError> {
        let envelope = match trace {
            TraceParent(Some(context)) => Envelope::new_in_trace(command, &context),
            TraceParent(None) => Envelope::new(command),
        }
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        self.commands.send_envelope(envelope).await?;
        Ok(())
    }
}

/// The health probes alone, for processes without the API (workers).
pub fn health_router(state: AppState) -> Router {
    Router::new()
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// The router of the whole API, behind the edge layers of `limits`
/// (see [`edge`]). Needs a Tokio runtime (the rate limiter's cleanup task).
pub fn router(state: AppState, limits: &EdgeLimits) -> Router {
    let request_timeout = limits.request_timeout;
    let trusted_proxies = limits.trusted_proxies.clone();
    let mut router = Router::new()
        .route("/user", put(users::save_user))
        .route("/users/{id}", get(users::get_user))
        .route("/users/{id}/orders", get(user_lists::list_user_orders))
        .route("/users/{id}/offers", get(user_lists::list_user_offers))
        .route("/book", put(books::save_book))
        .route("/books", get(books::list_books))
        .route("/books/{id}", get(books::get_book))
        .route("/offer", post(offers::create_offer))
        .route("/offers/{book_id}", get(offers::list_offers))
        .route("/order", post(orders::create_order))
        .route("/orders/{id}", get(orders::get_order))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/metrics", get(metrics::render))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(move |request, next| {
            edge::request_timeout(request_timeout, request, next)
        }))
        .layer(middleware::from_fn(error::log_server_errors));
    if let Some(rate) = limits.rate_limit {
        router = router.layer(middleware::from_fn_with_state(
            RateLimiter::new(rate),
            edge::rate_limit::limit,
        ));
    }
    // Authentication: outside the rate limit, which keys on the principal
    // it finds, inside load shedding.
    router
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            access::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            InFlight::new(limits.max_in_flight),
            edge::in_flight::limit,
        ))
        .layer(CatchPanicLayer::custom(|_| -> Response {
            ApiError::Internal("handler panicked".to_owned()).into_response()
        }))
        // `ETag`, `Cache-Control` and `304` (see `edge::caching`): outside
        // what answers on its own, so its errors are `no-store` too; inside
        // the request id and the metrics, so a `304` carries the one and
        // is counted as such by the other.
        .layer(middleware::from_fn(edge::caching::conditional))
        // Outside everything that answers on its own (panics, shedding,
        // throttling, authentication), so those answers are counted too.
        .layer(middleware::from_fn(metrics::measure))
        .layer(
            ServiceBuilder::new()
                .map_request(request_id::drop_insane)
                .layer(SetRequestIdLayer::new(
                    request_id::header_name(),
                    MakeRequestUuid,
                ))
                .layer(PropagateRequestIdLayer::new(request_id::header_name()))
                .map_request(move |request| client_ip::resolve(&trusted_proxies, request))
                .map_request(edge::trace::start)
                // `log_server_errors` logs the 5xx with their cause; shed
                // and throttled requests are not logged one by one.
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_id::span)
                        .on_failure(()),
                ),
        )
        .with_state(state)
}
