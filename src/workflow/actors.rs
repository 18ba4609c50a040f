//! Fix Inventory's subscribers ("actors"): who wants the actions of which workflow steps,
//! their live WebSocket channel (`/subscriber/{id}/handle`), the actions they have not
//! answered yet, and the steps waiting for their answers.
//!
//! Subscriptions are durable (`subscribers.json` in the store directory, replaced
//! atomically); connections and pending actions live in memory. An action sent while its
//! subscriber is away stays pending and is sent when it connects again.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// A subscriber's timeout when it gives none (seconds), as Fix Inventory's default.
pub const DEFAULT_SUBSCRIPTION_TIMEOUT_SECS: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub message_type: String,
    /// Whether a step waits for this subscriber's `action_done` / `action_error`.
    #[serde(default = "yes")]
    pub wait_for_completion: bool,
    /// How long a step waits for it (seconds).
    #[serde(default = "default_timeout")]
    pub timeout: u64,
}

fn yes() -> bool {
    true
}

fn default_timeout() -> u64 {
    DEFAULT_SUBSCRIPTION_TIMEOUT_SECS
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ActorError {
    #[error("no subscriber has id `{0}`")]
    Unknown(String),
    #[error("subscriber `{0}` is already connected")]
    AlreadyConnected(String),
    #[error("{0}")]
    Io(String),
}

/// A step's action sent to a subscriber, kept until it answers.
#[derive(Debug, Clone)]
struct Pending {
    task: String,
    step: String,
    message: String,
}

#[derive(Default)]
struct Actor {
    subscriptions: BTreeMap<String, Subscription>,
    /// The live channel and its connection number (a stale disconnect must not drop a new one).
    channel: Option<(u64, mpsc::UnboundedSender<String>)>,
    pending: Vec<Pending>,
}

/// One answer to a step's action.
#[derive(Debug, Clone)]
pub struct Answer {
    pub subscriber: String,
    /// `action_done` or `action_error`.
    pub kind: String,
    pub data: Value,
}

#[derive(Default)]
struct Inner {
    actors: BTreeMap<String, Actor>,
    /// Steps waiting for answers, by (task, step).
    waits: HashMap<(String, String), mpsc::UnboundedSender<Answer>>,
    connections: u64,
}

pub struct Actors {
    file: Option<PathBuf>,
    inner: Mutex<Inner>,
}

/// A subscriber as the HTTP API shows it.
#[derive(Debug, Serialize)]
pub struct SubscriberView {
    pub id: String,
    pub subscriptions: BTreeMap<String, Subscription>,
    pub connected: bool,
    pub pending_actions: usize,
}

impl Actors {
    /// Loads the subscriptions saved in `file` (none when it does not exist yet).
    pub fn open(file: Option<PathBuf>) -> Result<Self, ActorError> {
        let mut inner = Inner::default();
        if let Some(path) = &file {
            match std::fs::read(path) {
                Ok(bytes) => {
                    let saved: BTreeMap<String, BTreeMap<String, Subscription>> = serde_json::from_slice(&bytes)
                        .map_err(|e| ActorError::Io(format!("{}: {e}", path.display())))?;
                    for (id, subscriptions) in saved {
                        inner.actors.insert(id, Actor { subscriptions, ..Actor::default() });
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ActorError::Io(format!("{}: {e}", path.display()))),
            }
        }
        Ok(Self { file, inner: Mutex::new(inner) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds or replaces one subscription of `id`.
    pub fn subscribe(&self, id: &str, sub: Subscription) -> Result<SubscriberView, ActorError> {
        self.change(id, |a| {
            a.subscriptions.insert(sub.message_type.clone(), sub);
        })
    }

    /// Removes one subscription of `id`.
    pub fn unsubscribe(&self, id: &str, message_type: &str) -> Result<SubscriberView, ActorError> {
        if !self.lock().actors.get(id).is_some_and(|a| a.subscriptions.contains_key(message_type)) {
            return Err(ActorError::Unknown(id.to_string()));
        }
        self.change(id, |a| {
            a.subscriptions.remove(message_type);
        })
    }

    /// Replaces every subscription of `id`.
    pub fn replace(&self, id: &str, subs: Vec<Subscription>) -> Result<SubscriberView, ActorError> {
        self.change(id, |a| a.subscriptions = subs.into_iter().map(|s| (s.message_type.clone(), s)).collect())
    }

    fn change(&self, id: &str, f: impl FnOnce(&mut Actor)) -> Result<SubscriberView, ActorError> {
        let mut inner = self.lock();
        f(inner.actors.entry(id.to_string()).or_default());
        self.save(&inner)?;
        Ok(view(id, &inner.actors[id]))
    }

    /// Writes the subscriptions (temporary file, fsync, rename): a crash keeps the old or the new set.
    fn save(&self, inner: &Inner) -> Result<(), ActorError> {
        let Some(path) = &self.file else { return Ok(()) };
        let saved: BTreeMap<&String, &BTreeMap<String, Subscription>> = inner
            .actors
            .iter()
            .filter(|(_, a)| !a.subscriptions.is_empty())
            .map(|(id, a)| (id, &a.subscriptions))
            .collect();
        let write =
            || -> std::io::Result<()> { crate::store::files::write_atomic(path, &serde_json::to_vec_pretty(&saved)?) };
        write().map_err(|e| ActorError::Io(format!("{}: {e}", path.display())))
    }

    pub fn get(&self, id: &str) -> Option<SubscriberView> {
        self.lock().actors.get(id).map(|a| view(id, a))
    }

    pub fn list(&self) -> Vec<SubscriberView> {
        self.lock().actors.iter().map(|(id, a)| view(id, a)).collect()
    }

    /// Opens `id`'s channel: the receiver of its outgoing messages (pending actions first)
    /// and the connection number for [`disconnect`](Self::disconnect). One at a time.
    pub fn connect(&self, id: &str) -> Result<(u64, mpsc::UnboundedReceiver<String>, Vec<String>), ActorError> {
        let mut inner = self.lock();
        inner.connections += 1;
        let n = inner.connections;
        let actor = inner.actors.entry(id.to_string()).or_default();
        if actor.channel.as_ref().is_some_and(|(_, tx)| !tx.is_closed()) {
            return Err(ActorError::AlreadyConnected(id.to_string()));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        for p in &actor.pending {
            let _ = tx.send(p.message.clone());
        }
        actor.channel = Some((n, tx));
        let channels = actor.subscriptions.keys().cloned().collect();
        Ok((n, rx, channels))
    }

    /// Closes connection `n` of `id` (not a newer one); returns its channels.
    pub fn disconnect(&self, id: &str, n: u64) -> Vec<String> {
        let mut inner = self.lock();
        let Some(actor) = inner.actors.get_mut(id) else { return Vec::new() };
        if actor.channel.as_ref().is_some_and(|(k, _)| *k == n) {
            actor.channel = None;
        }
        actor.subscriptions.keys().cloned().collect()
    }

    /// Sends a step's action to every subscriber of `step`; returns those the step waits
    /// for, with their timeouts, and the receiver of their answers.
    pub fn dispatch(
        &self,
        task: &str,
        step: &str,
        message: &str,
    ) -> (Vec<(String, u64)>, mpsc::UnboundedReceiver<Answer>) {
        let mut inner = self.lock();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for (id, actor) in inner.actors.iter_mut() {
            let Some(sub) = actor.subscriptions.get(step) else { continue };
            if sub.wait_for_completion {
                waiting.push((id.clone(), sub.timeout));
                actor.pending.push(Pending { task: task.into(), step: step.into(), message: message.into() });
            }
            if let Some((_, ch)) = &actor.channel {
                let _ = ch.send(message.to_string());
            }
        }
        inner.waits.insert((task.to_string(), step.to_string()), tx);
        (waiting, rx)
    }

    /// The step is over: stop waiting, forget what is still pending for it.
    pub fn step_done(&self, task: &str, step: &str) {
        let mut inner = self.lock();
        inner.waits.remove(&(task.to_string(), step.to_string()));
        for actor in inner.actors.values_mut() {
            actor.pending.retain(|p| !(p.task == task && p.step == step));
        }
    }

    /// A message from `id`'s channel answering (task, step); false when no step waits for it.
    pub fn answer(&self, id: &str, task: &str, step: &str, kind: &str, data: Value) -> bool {
        let mut inner = self.lock();
        if let Some(actor) = inner.actors.get_mut(id) {
            actor.pending.retain(|p| !(p.task == task && p.step == step));
        }
        match inner.waits.get(&(task.to_string(), step.to_string())) {
            Some(tx) => tx.send(Answer { subscriber: id.into(), kind: kind.into(), data }).is_ok(),
            None => false,
        }
    }
}

fn view(id: &str, a: &Actor) -> SubscriberView {
    SubscriberView {
        id: id.to_string(),
        subscriptions: a.subscriptions.clone(),
        connected: a.channel.as_ref().is_some_and(|(_, tx)| !tx.is_closed()),
        pending_actions: a.pending.len(),
    }
}
