use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors of the query APIs, each with Prometheus's `errorType` and HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A missing or malformed parameter: `bad_data`, 400.
    #[error("{0}")]
    BadData(String),
    /// The expression cannot be executed: `execution`, 422.
    #[error("{0}")]
    Execution(String),
    /// The query ran past its timeout: `timeout`, 503.
    #[error("{0}")]
    Timeout(String),
    /// The client went away: `canceled`, 503.
    #[error("{0}")]
    Canceled(String),
    /// Storage failed: `internal`, 500.
    #[error("{0}")]
    Internal(String),
}

impl QueryError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            QueryError::BadData(_) => (StatusCode::BAD_REQUEST, "bad_data"),
            QueryError::Execution(_) => (StatusCode::UNPROCESSABLE_ENTITY, "execution"),
            QueryError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            QueryError::Canceled(_) => (StatusCode::SERVICE_UNAVAILABLE, "canceled"),
            QueryError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<vigil_tsdb::Error> for QueryError {
    fn from(error: vigil_tsdb::Error) -> Self {
        match error {
            vigil_tsdb::Error::InvalidMatcher(message) => QueryError::BadData(message),
            other => QueryError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.parts();
        let body = json!({"status": "error", "errorType": error_type, "error": self.to_string()});
        (status, Json(body)).into_response()
    }
}
