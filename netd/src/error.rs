use thiserror::Error;

/// Errors the agent reports to API clients. The message is what the user sees, so it
/// names the thing at fault and, where useful, what to do about it.
#[derive(Debug, Error)]
pub enum NetdError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Conflict(String),
    /// Docker's 403: the operation is not allowed on this object (a built-in network,
    /// one in use).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
}

impl NetdError {
    pub fn status(&self) -> u16 {
        match self {
            NetdError::InvalidArgument(_) => 400,
            NetdError::NotFound(_) => 404,
            NetdError::Conflict(_) => 409,
            NetdError::Forbidden(_) => 403,
            NetdError::Internal(_) => 500,
        }
    }
}

impl From<anyhow::Error> for NetdError {
    fn from(e: anyhow::Error) -> Self {
        NetdError::Internal(format!("{e:#}"))
    }
}

pub type Result<T, E = NetdError> = std::result::Result<T, E>;
