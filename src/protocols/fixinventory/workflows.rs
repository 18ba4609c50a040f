//! Fix Inventory's workflows: `collect_and_cleanup` (and its parts `collect`, `cleanup`,
//! `metrics`) step through the documented phases in order. Each step is an `action`
//! message: accepted as the event `fixinventory/<step>` (so Wasm handlers routed on it run,
//! and subscribers see it) and sent to every WebSocket subscriber ([`super::actors`]) of that step.
//! The step waits until every blocking subscriber answered (`action_done` /
//! `action_error`) or its timeout passed, and until the Wasm handlers finished.
//!
//! A run is a task: `task_started`, one `progress` per step and `task_end` are emitted, and
//! `GET /v1/tasks/{id}` shows each step: who answered, who timed out. Runs of one workflow
//! never overlap: a trigger while one is going makes the next wait its turn. Triggers: a
//! cron schedule, an event type, or `POST /v1/workflows/{name}/run`.

use super::actors::Actors;
use super::config::WorkflowConfig;
use crate::event::pattern::TypePattern;
use crate::http::AppState;
use crate::store::lease::Leases;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The documented workflows and their steps, in order.
pub const WORKFLOWS: &[(&str, &[&str])] = &[
    (
        "collect_and_cleanup",
        &[
            "pre_collect",
            "collect",
            "merge_outer_edges",
            "post_collect",
            "pre_cleanup_plan",
            "cleanup_plan",
            "post_cleanup_plan",
            "pre_cleanup",
            "cleanup",
            "post_cleanup",
            "pre_generate_metrics",
            "generate_metrics",
            "post_generate_metrics",
        ],
    ),
    ("collect", &["pre_collect", "collect", "merge_outer_edges", "post_collect"]),
    ("cleanup", &["pre_cleanup_plan", "cleanup_plan", "post_cleanup_plan", "pre_cleanup", "cleanup", "post_cleanup"]),
    ("metrics", &["pre_generate_metrics", "generate_metrics", "post_generate_metrics"]),
];

/// Tasks kept for `GET /v1/tasks` (the oldest finished ones are forgotten first).
pub const MAX_TASKS: usize = 256;

/// The `source` of the events workflows emit (event triggers ignore them, so a workflow
/// cannot trigger itself).
pub const SOURCE: &str = "eventyard:workflow";

pub fn steps(workflow: &str) -> Option<&'static [&'static str]> {
    WORKFLOWS.iter().find(|(n, _)| *n == workflow).map(|(_, s)| *s)
}

/// Parses a cron expression in UTC: 5 fields (minute first), or 6 with seconds first.
pub fn parse_schedule(cron: &str) -> Result<croner::Cron, String> {
    croner::Cron::new(cron).with_seconds_optional().parse().map_err(|e| format!("not a cron expression: {e}"))
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("unknown workflow `{0}`")]
    Unknown(String),
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a run of the same workflow to end.
    Waiting,
    Running,
    Done,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    /// Every participant answered `action_done` (or finished, for Wasm handlers).
    Done,
    /// Someone answered with an error or timed out; the workflow goes on.
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    /// A subscriber id, or `wasm:<plugin>`.
    pub name: String,
    /// `action_done` or `action_error`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: &'static str,
    pub state: StepState,
    /// The id of the step's action event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_id: Option<String>,
    pub answered: Vec<Participant>,
    pub timed_out: Vec<String>,
    /// When the step began and ended (the dashboard draws each task's timeline from them).
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<time::OffsetDateTime>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Task {
    pub id: String,
    pub workflow: &'static str,
    /// `api`, `schedule` or `event:<type>`.
    pub trigger: String,
    pub state: TaskState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// When its turn came (runs of one workflow never overlap).
    #[serde(with = "time::serde::rfc3339::option")]
    pub started_at: Option<time::OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<time::OffsetDateTime>,
    pub steps: Vec<StepReport>,
}

pub struct Workflows {
    pub actors: Actors,
    configs: HashMap<&'static str, WorkflowConfig>,
    turns: HashMap<&'static str, tokio::sync::Mutex<()>>,
    /// On a shared log: a workflow's turn is cluster-wide (runs on different instances
    /// never overlap either).
    leases: Option<Arc<dyn Leases>>,
    tasks: Mutex<VecDeque<Arc<Mutex<Task>>>>,
}

impl Workflows {
    /// `configs`: the configured triggers and timeouts (workflows not listed run by API only).
    pub fn new(configs: &[WorkflowConfig], actors: Actors) -> Self {
        let configs = WORKFLOWS
            .iter()
            .map(|(name, _)| {
                let c = configs.iter().find(|c| c.name == *name).cloned();
                (*name, c.unwrap_or_else(|| WorkflowConfig::named(name)))
            })
            .collect();
        let turns = WORKFLOWS.iter().map(|(name, _)| (*name, tokio::sync::Mutex::new(()))).collect();
        Self { actors, configs, turns, leases: None, tasks: Mutex::default() }
    }

    /// Takes each run's turn from `leases` too (see [`Workflows::leases`]).
    pub fn with_leases(mut self, leases: Arc<dyn Leases>) -> Self {
        self.leases = Some(leases);
        self
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Mutex<Task>>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every known workflow with its steps and triggers.
    pub fn describe(&self) -> Value {
        let list: Vec<Value> = WORKFLOWS
            .iter()
            .map(|(name, steps)| {
                let c = &self.configs[name];
                json!({ "name": name, "steps": steps, "schedule": c.schedule, "on_event": c.on_event,
                        "step_timeout_secs": c.step_timeout_secs })
            })
            .collect();
        json!({ "workflows": list })
    }

    pub fn task(&self, id: &str) -> Option<Task> {
        self.tasks().iter().map(|t| t.lock().expect("task").clone()).find(|t| t.id == id)
    }

    /// The tasks, newest first.
    pub fn list(&self) -> Vec<Task> {
        self.tasks().iter().rev().map(|t| t.lock().expect("task").clone()).collect()
    }

    /// Starts a run (it waits for its turn if one is going); returns the task id at once.
    /// `step_data`: extra fields for the data of some steps' actions (by step name), such as
    /// the candidate resources of `cleanup_plan`.
    pub fn start(
        self: &Arc<Self>,
        state: Arc<AppState>,
        name: &str,
        trigger: String,
        step_data: HashMap<String, serde_json::Map<String, Value>>,
    ) -> Result<String, WorkflowError> {
        let (workflow, steps) =
            WORKFLOWS.iter().find(|(n, _)| *n == name).ok_or_else(|| WorkflowError::Unknown(name.to_string()))?;
        // A schedule or an event while a run already waits its turn joins that run: a burst of
        // trigger events cannot pile up runs (and memory) without bound.
        if trigger != "api" {
            let waiting = self.tasks().iter().find_map(|t| {
                let t = t.lock().expect("task");
                (t.workflow == *workflow && t.state == TaskState::Waiting).then(|| t.id.clone())
            });
            if let Some(id) = waiting {
                return Ok(id);
            }
        }
        let task = Task {
            id: uuid::Uuid::now_v7().to_string(),
            workflow,
            trigger,
            state: TaskState::Waiting,
            created_at: time::OffsetDateTime::now_utc(),
            started_at: None,
            finished_at: None,
            steps: steps
                .iter()
                .map(|step| StepReport {
                    step,
                    state: StepState::Pending,
                    action_id: None,
                    answered: Vec::new(),
                    timed_out: Vec::new(),
                    started_at: None,
                    finished_at: None,
                })
                .collect(),
        };
        let id = task.id.clone();
        let task = Arc::new(Mutex::new(task));
        {
            let mut tasks = self.tasks();
            tasks.push_back(task.clone());
            while tasks.len() > MAX_TASKS {
                let Some(i) = tasks.iter().position(|t| t.lock().expect("task").state == TaskState::Done) else {
                    break;
                };
                tasks.remove(i);
            }
        }
        tokio::spawn(self.clone().run(state, task, step_data));
        Ok(id)
    }

    async fn run(
        self: Arc<Self>,
        state: Arc<AppState>,
        task: Arc<Mutex<Task>>,
        mut step_data: HashMap<String, serde_json::Map<String, Value>>,
    ) {
        let (id, workflow) = {
            let t = task.lock().expect("task");
            (t.id.clone(), t.workflow)
        };
        let _turn = self.turns[workflow].lock().await;
        let _lease = match &self.leases {
            Some(leases) => Some(leases.acquire(&format!("workflow-{workflow}")).await),
            None => None,
        };
        {
            let mut t = task.lock().expect("task");
            t.state = TaskState::Running;
            t.started_at = Some(time::OffsetDateTime::now_utc());
        }
        let timeout = Duration::from_secs(self.configs[workflow].step_timeout_secs);
        emit(&state, "task_started", json!({ "task": workflow, "task_id": id })).await;
        let steps = steps(workflow).expect("a known workflow");
        for (i, step) in steps.iter().enumerate() {
            let started = Some(time::OffsetDateTime::now_utc());
            {
                let mut t = task.lock().expect("task");
                t.steps[i].state = StepState::Running;
                t.steps[i].started_at = started;
            }
            let extra = step_data.remove(*step).unwrap_or_default();
            let mut report = self.step(&state, &id, workflow, step, extra, timeout).await;
            report.started_at = started;
            report.finished_at = Some(time::OffsetDateTime::now_utc());
            task.lock().expect("task").steps[i] = report;
            let message = format!("step {step} done ({} of {})", i + 1, steps.len());
            emit(&state, "progress", json!({ "workflow": workflow, "task": id, "message": message })).await;
        }
        {
            // Done before `task_end` goes out: whoever hears it and asks finds the task done.
            let mut t = task.lock().expect("task");
            t.state = TaskState::Done;
            t.finished_at = Some(time::OffsetDateTime::now_utc());
        }
        emit(&state, "task_end", json!({ "task_id": id, "descriptor_id": workflow })).await;
    }

    /// One step: the action event (Wasm handlers), the action to subscribers, the wait.
    async fn step(
        &self,
        state: &AppState,
        task: &str,
        workflow: &str,
        step: &'static str,
        mut data: serde_json::Map<String, Value>,
        timeout: Duration,
    ) -> StepReport {
        let mut report = StepReport {
            step,
            state: StepState::Running,
            action_id: None,
            answered: Vec::new(),
            timed_out: Vec::new(),
            started_at: None,
            finished_at: None,
        };
        data.insert("task".into(), json!(task));
        data.insert("step".into(), json!(step));
        data.insert("workflow".into(), json!(workflow));
        let action = json!({ "kind": "action", "message_type": step, "data": data });
        let type_name = format!("fixinventory/{step}");
        let action_id = match state.emit_internal(&type_name, action.clone(), SOURCE).await {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::error!(task, step, error = %e, "workflow step: the action event was not accepted");
                None
            }
        };
        report.action_id = action_id.clone();
        let (waiting, mut answers) = self.actors.dispatch(task, step, &action.to_string());

        // Subscribers: each until its answer or its own timeout.
        let start = Instant::now();
        let mut due: HashMap<String, Instant> =
            waiting.into_iter().map(|(who, secs)| (who, super::actors::deadline(start, secs))).collect();
        while !due.is_empty() {
            let next = *due.values().min().expect("not empty");
            tokio::select! {
                answer = answers.recv() => match answer {
                    Some(a) if due.remove(&a.subscriber).is_some() => {
                        let error = (a.kind == "action_error").then(|| a.data.get("error").map_or_else(|| a.data.to_string(), |e| e.to_string()));
                        report.answered.push(Participant { name: a.subscriber, kind: a.kind, error });
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(next) => {
                    let now = Instant::now();
                    let mut late: Vec<String> = due.iter().filter(|(_, at)| **at <= now).map(|(w, _)| w.clone()).collect();
                    late.sort();
                    late.iter().for_each(|w| { due.remove(w); });
                    report.timed_out.extend(late);
                }
            }
        }
        self.actors.step_done(task, step);

        // Wasm handlers routed on the action event: until they finished, or the step timeout.
        let handlers: Vec<String> = state
            .pipeline
            .core()
            .routes()
            .iter()
            .filter(|r| r.matcher.matches(&type_name))
            .flat_map(|r| r.handlers.iter().map(|h| h.name().to_string()))
            .collect();
        if let (Some(id), false) = (&action_id, handlers.is_empty()) {
            let finished = state.pipeline.core().finished(id);
            match tokio::time::timeout_at(start + timeout, finished).await {
                Ok(Some(finished)) => {
                    for h in &handlers {
                        let failed = finished.outcome.failed.iter().find(|f| &f.plugin == h);
                        report.answered.push(Participant {
                            name: format!("wasm:{h}"),
                            kind: if failed.is_some() { "action_error" } else { "action_done" }.into(),
                            error: failed.map(|f| format!("{}: {}", f.kind, f.message)),
                        });
                    }
                }
                Ok(None) | Err(_) => report.timed_out.extend(handlers.iter().map(|h| format!("wasm:{h}"))),
            }
        }
        let failed = !report.timed_out.is_empty() || report.answered.iter().any(|p| p.error.is_some());
        report.state = if failed { StepState::Failed } else { StepState::Done };
        report
    }

    /// Starts the schedules and event triggers; the handles stop them (see [`crate::app::serve`]).
    pub fn spawn_triggers(self: &Arc<Self>, state: &Arc<AppState>) -> Vec<JoinHandle<()>> {
        let mut handles = Vec::new();
        for (name, c) in &self.configs {
            if let Some(cron) = c.schedule.as_deref().and_then(|s| parse_schedule(s).ok()) {
                let (me, state, name) = (self.clone(), state.clone(), *name);
                handles.push(tokio::spawn(async move {
                    loop {
                        let now = chrono::Utc::now();
                        let Ok(next) = cron.find_next_occurrence(&now, false) else { return };
                        let wait = (next - now).to_std().unwrap_or_default();
                        tokio::time::sleep(wait).await;
                        let _ = me.start(state.clone(), name, "schedule".into(), HashMap::new());
                        // Past the minute, so one occurrence starts one run.
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }));
            }
        }
        let triggers: Vec<(&'static str, TypePattern)> = self
            .configs
            .iter()
            .filter(|(_, c)| !c.on_event.is_empty())
            .filter_map(|(name, c)| TypePattern::parse(&c.on_event.join(",")).ok().map(|p| (*name, p)))
            .collect();
        if !triggers.is_empty() {
            let (me, state2) = (self.clone(), state.clone());
            let mut rx = state.pipeline.bus.subscribe();
            handles.push(tokio::spawn(async move {
                loop {
                    let frame = match rx.recv().await {
                        Ok(f) => f,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "workflow event triggers fell behind the bus");
                            continue;
                        }
                        Err(_) => return,
                    };
                    for (name, pattern) in &triggers {
                        if pattern.matches(&frame.type_name) && !from_workflow(&frame.json) {
                            let _ =
                                me.start(state2.clone(), name, format!("event:{}", frame.type_name), HashMap::new());
                        }
                    }
                }
            }));
        }
        handles
    }
}

/// Whether a bus frame is one of the workflows' own events.
fn from_workflow(frame_json: &str) -> bool {
    serde_json::from_str::<Value>(frame_json).is_ok_and(|v| v["source"] == SOURCE)
}

/// Emits one of the task events (`task_started`, `progress`, `task_end`) in Fix Inventory's form.
async fn emit(state: &AppState, message_type: &str, data: Value) {
    let body = json!({ "kind": "event", "message_type": message_type, "data": data });
    if let Err(e) = state.emit_internal(&format!("fixinventory/{message_type}"), body, SOURCE).await {
        tracing::error!(message_type, error = %e, "a workflow event was not accepted");
    }
}
