//! Settings of the api role.

use std::{net::SocketAddr, time::Duration};

use serde::{Deserialize, Serialize};

/// Settings of the command API role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandApiSettings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered with 503.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for CommandApiSettings {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8080).into(),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}
