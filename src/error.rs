//! One error type for the whole service, mapped to a gRPC status in exactly one place.

use tonic::{Code, Status};

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The request is malformed: wrong shape, dtype, non-finite values, protocol misuse.
    #[error("{0}")]
    InvalidArgument(String),
    /// The named model is not loaded.
    #[error("{0}")]
    NotFound(String),
    /// The server is at capacity or a message exceeds a size limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The client went away or cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// The request's deadline passed before its work could start.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The server is shutting down, still loading, or the worker is gone.
    #[error("{0}")]
    Unavailable(String),
    /// The client may not ask for this (e.g. high priority without being configured for it).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request needs something this server is not configured for (e.g. a PACS).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bug or a failure inside a model; the message is safe to show (no patient data).
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `return Err(invalid!("..."))` shorthand.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::error::Error::InvalidArgument(format!($($arg)*)) };
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Internal(format!("tensor computation failed: {e}"))
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Cancelled(_) => Code::Cancelled,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unavailable(_) => Code::Unavailable,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// tonic reports a decoded message above the size limit as OUT_OF_RANGE; gRPC clients expect
/// RESOURCE_EXHAUSTED for that, with the limit in the message.
pub fn normalise_transport_status(status: Status) -> Status {
    if status.code() == Code::OutOfRange && status.message().contains("message length too large") {
        Status::resource_exhausted(format!(
            "{}; raise the server's --max-message-mb or send smaller messages",
            status.message()
        ))
    } else {
        status
    }
}
