use std::path::PathBuf;

/// Errors of the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// A node file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The Kubernetes API server could not be asked, or did not answer with what was asked for.
    #[error("Kubernetes API request {url} failed: {reason}")]
    Api {
        /// The request.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A node file did not have the expected format.
    #[error("unexpected format in {path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}
