use std::path::PathBuf;

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O failure (disk full, permissions, ...).
    #[error("io error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Bytes on disk that fail their checksum or do not decode.
    #[error("data corruption in {path} at offset {offset}: {reason}")]
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A label set that the store will not hold.
    #[error("invalid series: {0}")]
    InvalidSeries(String),
    /// A configured limit was hit.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// A matcher that cannot be evaluated (bad regex).
    #[error("invalid matcher: {0}")]
    InvalidMatcher(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// Why a single sample was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// Same timestamp as a stored sample but another value.
    #[error("duplicate sample for timestamp")]
    DuplicateTimestamp,
    /// Older than the out-of-order window allows.
    #[error("out of order sample")]
    OutOfOrder,
    /// At or before the newest time already written to a block.
    #[error("out of bounds")]
    OutOfBounds,
    /// The series could not be created (limits, invalid labels).
    #[error("{0}")]
    SeriesRejected(String),
}
