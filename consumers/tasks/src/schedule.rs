//! Periodic tasks as configured (`tasks.schedules` in the settings): what
//! the scheduler role (`tributary-scheduler`) fires.

use serde::{Deserialize, Serialize};

use crate::Priority;

/// A periodic task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The schedule's name (unique).
    pub name: String,
    /// The task it enqueues.
    pub task: String,
    /// When, in UTC: `0 6 * * *` (minute hour day month weekday), or with
    /// seconds first.
    pub cron: String,
    /// The task's arguments.
    #[serde(default)]
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Its queue.
    #[serde(default)]
    pub priority: Priority,
    /// What to do about ticks missed while no scheduler ran.
    #[serde(default)]
    pub missed: Missed,
}

/// The missed-tick policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    /// Drop missed ticks; fire again at the next one.
    #[default]
    Skip,
    /// Fire once for all missed ticks, then go on.
    CatchUpOnce,
}
