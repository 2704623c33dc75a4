use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Settings of the projector role.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProjectorSettings {
    /// Consumer group of the projector.
    pub group_id: String,
    /// Most messages applied in one batch. Batches grow up to this while
    /// there is a backlog and shrink to single events when there is none.
    pub max_batch: usize,
    /// How long shutdown may take to apply what was fetched; keep it below
    /// the group session timeout.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// First wait before retrying a batch after a transient failure (doubles up to 30 s).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            group_id: "tributary-projector".into(),
            max_batch: 5000,
            drain_timeout: Duration::from_secs(5),
            retry_backoff: Duration::from_millis(200),
        }
    }
}
