//! Answers the fakes build the same way.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// `body` as JSON with `status`; a 204 carries no body, as Go's `net/http` sends none.
pub fn json(status: u16, body: Value) -> Response {
    let mut r = (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    if status == 204 {
        *r.body_mut() = Body::empty();
    }
    r
}
