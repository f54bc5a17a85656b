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

/// Kernel work and helpers speak anyhow: a NetdError inside (a bad request found deep
/// down, with context added on the way up) keeps its kind; anything else is internal.
impl From<anyhow::Error> for NetdError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<NetdError>() {
            Ok(ne) => ne,
            Err(e) => NetdError::Internal(format!("{e:#}")),
        }
    }
}

pub type Result<T, E = NetdError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_kind_survives_anyhow_and_its_context() {
        let bad: anyhow::Result<()> = Err(NetdError::Conflict("in use".into()).into());
        let e = NetdError::from(bad.context("removing network n").unwrap_err());
        assert_eq!((e.status(), e.to_string().as_str()), (409, "in use"));
        let io = anyhow::anyhow!("netlink: busy").context("creating bridge b");
        let e = NetdError::from(io);
        assert_eq!(e.status(), 500);
        assert_eq!(e.to_string(), "creating bridge b: netlink: busy");
    }
}
