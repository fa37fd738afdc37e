use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request was not (fully) ingested; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is not what the protocol says (bad protobuf, bad snappy, invalid UTF-8): 400, do not retry.
    #[error("malformed payload: {0}")]
    Malformed(String),
    /// A content type or encoding this endpoint does not speak: 415.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The body expands beyond the configured limit: 413, do not retry.
    #[error("payload too large: {0}")]
    TooLarge(String),
    /// Some items were refused by storage (out of order, duplicate, limits): 400, do not retry.
    #[error("{rejected} of {total} samples rejected; first: {first}")]
    Rejected {
        /// Samples refused.
        rejected: usize,
        /// Samples in the request.
        total: usize,
        /// The first refusal's message.
        first: String,
    },
    /// Storage could not take the data now (I/O failure, full disk): 503, retry later.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl IngestError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            IngestError::Malformed(_) | IngestError::Rejected { .. } => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}
