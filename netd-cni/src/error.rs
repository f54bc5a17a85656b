//! CNI's error result (SPEC.md, section 5 "Error"): what the plugin prints on stdout,
//! with a non-zero exit, when a verb fails.
use serde::{Deserialize, Serialize};

/// The spec's well-known codes (0-99) and netd-cni's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENVIRONMENT: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const PLUGIN_NOT_AVAILABLE: u32 = 50;
    /// The daemon refused the request for a reason none of the above names (a host
    /// port already published, an address in use, an internal failure).
    pub const DAEMON_REFUSED: u32 = 100;
    /// CHECK found the attachment different from what ADD made.
    pub const DRIFT: u32 = 101;
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error in the current protocol version; `reply` sets the caller's version.
    pub fn new(code: u32, msg: &str, details: impl Into<String>) -> CniError {
        CniError {
            cni_version: crate::version::CURRENT_VERSION.to_string(),
            code,
            msg: msg.to_string(),
            details: details.into(),
        }
    }

    pub fn in_version(mut self, version: &str) -> CniError {
        if !version.is_empty() {
            self.cni_version = version.to_string();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spec's example error, field for field.
    #[test]
    fn error_json_is_the_specs_shape() {
        let spec = r#"{
          "cniVersion": "1.1.0",
          "code": 7,
          "msg": "Invalid Configuration",
          "details": "Network 192.168.0.0/31 too small to allocate from."
        }"#;
        let e = CniError::new(
            code::INVALID_CONFIG,
            "Invalid Configuration",
            "Network 192.168.0.0/31 too small to allocate from.",
        );
        let want: serde_json::Value = serde_json::from_str(spec).unwrap();
        assert_eq!(serde_json::to_value(&e).unwrap(), want);
        let back: CniError = serde_json::from_str(spec).unwrap();
        assert_eq!(back, e);
        assert_eq!(e.in_version("0.4.0").cni_version, "0.4.0");
    }
}
