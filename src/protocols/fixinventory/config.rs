//! `[[workflow]]`: when Fix Inventory's documented workflows run, and their step timeout.

use super::workflows::{parse_schedule, steps, WORKFLOWS};
use crate::event::pattern::TypePattern;
use crate::settings::{at_most, Invalid};
use serde::Deserialize;

/// Handler calls per event and route before a dead letter, and the back-off between them.
/// The embedded schedule of `collect_and_cleanup`: hourly, as Fix Inventory runs it.
pub const DEFAULT_WORKFLOW_SCHEDULE: &str = "0 * * * *";

/// How long a workflow step waits for Wasm handlers and for subscribers that set no timeout.
pub const DEFAULT_STEP_TIMEOUT_SECS: u64 = 60;

/// Largest workflow `step_timeout_secs` (one day): it is added to the clock.
pub const MAX_STEP_TIMEOUT_SECS: u64 = 24 * 3600;

/// `[[workflow]]`: a trigger and the step timeout of one documented workflow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowConfig {
    /// `collect_and_cleanup`, `collect`, `cleanup` or `metrics`.
    pub name: String,
    /// A cron expression in UTC, e.g. `"0 * * * *"` (5 fields; 6 with seconds first); absent: no schedule.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Globs of event types whose arrival starts a run.
    #[serde(default)]
    pub on_event: Vec<String>,
    /// How long a step waits for Wasm handlers and for subscribers that set no timeout.
    #[serde(default = "default_step_timeout")]
    pub step_timeout_secs: u64,
}

fn default_step_timeout() -> u64 {
    DEFAULT_STEP_TIMEOUT_SECS
}

impl WorkflowConfig {
    /// The workflow with no trigger but the API.
    pub fn named(name: &str) -> Self {
        Self { name: name.into(), schedule: None, on_event: Vec::new(), step_timeout_secs: DEFAULT_STEP_TIMEOUT_SECS }
    }
}

impl WorkflowConfig {
    /// Checks this trigger alone (that no workflow is listed twice is the composition's
    /// check); `key` is how the user names it (`workflow[0] (collect)`).
    pub fn check(&self, key: &str) -> Result<(), Invalid> {
        let key = |k: &str| format!("{key}.{k}");
        at_most(key("step_timeout_secs"), self.step_timeout_secs, MAX_STEP_TIMEOUT_SECS)?;
        if steps(&self.name).is_none() {
            let known = WORKFLOWS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
            return Err(Invalid::new(key("name"), format!("unknown workflow; known: {known}")));
        }
        if let Some(cron) = &self.schedule {
            parse_schedule(cron).map_err(|e| Invalid::new(key("schedule"), e))?;
        }
        for g in &self.on_event {
            TypePattern::parse(g).map_err(|e| Invalid::new(key("on_event"), e.to_string()))?;
        }
        if self.step_timeout_secs == 0 {
            return Err(Invalid::new(key("step_timeout_secs"), "must be greater than 0"));
        }
        Ok(())
    }
}
