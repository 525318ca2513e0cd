//! What every handler can reach, [`AppState`], and the parts of it the
//! lower modules take as their own state (so that they need not know it).

use std::sync::Arc;

use axum::extract::FromRef;
use tenax_core::Engine;

use crate::auth::{Access, Gate};
use crate::config::ServerConfig;
use crate::conn::origin::TrustForwarded;
use crate::ops::{OpsState, ReadyCache};
use crate::problem::Problem;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) engine: Engine,
    pub(crate) config: Arc<ServerConfig>,
    /// The last `/readyz` answer.
    pub(crate) ready: Arc<ReadyCache>,
}

impl AppState {
    /// 413 for an upload larger than the configured maximum or the
    /// credential's own.
    pub(crate) fn check_size(&self, access: &Access, size: Option<u64>) -> Result<(), Problem> {
        let max = match (self.config.max_upload_size, access.max_upload_size) {
            (Some(server), Some(token)) => Some(server.min(token)),
            (server, token) => server.or(token),
        };
        match (size, max) {
            (Some(size), Some(max)) if size > max => Err(Problem::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "urn:tenax:problem:too-large",
                "Upload too large",
                format!("uploads are limited to {max} bytes"),
            )),
            _ => Ok(()),
        }
    }
}

impl FromRef<AppState> for TrustForwarded {
    fn from_ref(state: &AppState) -> Self {
        state.config.trust_forwarded.clone()
    }
}

impl FromRef<AppState> for OpsState {
    fn from_ref(state: &AppState) -> Self {
        OpsState {
            engine: state.engine.clone(),
            ready: Arc::clone(&state.ready),
            metrics: state.config.metrics.clone(),
        }
    }
}

impl FromRef<AppState> for Gate {
    fn from_ref(state: &AppState) -> Self {
        Gate {
            auth: Arc::clone(&state.config.auth),
            engine: state.engine.clone(),
        }
    }
}
