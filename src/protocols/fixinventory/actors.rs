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
/// Longest timeout a subscriber may ask for (seconds): a day, longer than any collect run,
/// and far from where adding it to a clock overflows (`?timeout=9223372036854775808` made
/// every run of the workflow panic). Past it `POST`/`PUT` answer 400; a longer one saved by
/// an older version is cut to it when loaded.
pub const MAX_SUBSCRIPTION_TIMEOUT_SECS: u64 = 24 * 3600;
/// Subscriber ids known at once (with subscriptions, connected, or with actions pending):
/// each is memory and a line of `subscribers.json`, and ids are free for anyone to make up.
/// Past it a new id is refused with 409 `too_many_subscribers`; known ids keep working.
pub const MAX_SUBSCRIBERS: usize = 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub message_type: String,
    /// Whether a step waits for this subscriber's `action_done` / `action_error`.
    #[serde(default = "yes")]
    pub wait_for_completion: bool,
    /// How long a step waits for it (seconds).
    #[serde(default = "default_timeout", deserialize_with = "whole_seconds")]
    pub timeout: u64,
}

/// Seconds as a JSON integer, written either way (`60` or `60.0`: JSON does not tell them
/// apart, and Python clients may send either).
fn whole_seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = f64::deserialize(d)?;
    match n.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&n) {
        true => Ok(n as u64),
        false => Err(serde::de::Error::custom(format!("timeout {n} is not a whole number of seconds"))),
    }
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
    #[error("{0} subscriber ids exist already")]
    TooMany(usize),
    #[error("timeout {0} s is longer than the limit of {MAX_SUBSCRIPTION_TIMEOUT_SECS} s")]
    BadTimeout(u64),
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
                    for (id, mut subscriptions) in saved {
                        for s in subscriptions.values_mut().filter(|s| s.timeout > MAX_SUBSCRIPTION_TIMEOUT_SECS) {
                            tracing::warn!(subscriber = %id, step = %s.message_type, timeout = s.timeout, "saved subscription timeout cut to {MAX_SUBSCRIPTION_TIMEOUT_SECS} s");
                            s.timeout = MAX_SUBSCRIPTION_TIMEOUT_SECS;
                        }
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
        checked_timeout(&sub)?;
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
        subs.iter().try_for_each(checked_timeout)?;
        self.change(id, |a| a.subscriptions = subs.into_iter().map(|s| (s.message_type.clone(), s)).collect())
    }

    fn change(&self, id: &str, f: impl FnOnce(&mut Actor)) -> Result<SubscriberView, ActorError> {
        let mut inner = self.lock();
        f(actor(&mut inner, id)?);
        self.save(&inner)?;
        let shown = view(id, &inner.actors[id]);
        forget_if_idle(&mut inner, id);
        Ok(shown)
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
        let write = || -> std::io::Result<()> { crate::files::write_atomic(path, &serde_json::to_vec_pretty(&saved)?) };
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
        let actor = actor(&mut inner, id)?;
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
        let channels = actor.subscriptions.keys().cloned().collect();
        forget_if_idle(&mut inner, id);
        channels
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

/// When a subscriber's wait that starts at `start` ends: `timeout` seconds later (capped at
/// [`MAX_SUBSCRIPTION_TIMEOUT_SECS`], added without overflowing).
pub fn deadline(start: tokio::time::Instant, timeout: u64) -> tokio::time::Instant {
    let cap = std::time::Duration::from_secs(MAX_SUBSCRIPTION_TIMEOUT_SECS);
    let wait = std::time::Duration::from_secs(timeout).min(cap);
    start.checked_add(wait).or_else(|| start.checked_add(cap)).unwrap_or(start)
}

/// `id`'s entry, made if new and there is room under [`MAX_SUBSCRIBERS`].
fn actor<'a>(inner: &'a mut Inner, id: &str) -> Result<&'a mut Actor, ActorError> {
    if !inner.actors.contains_key(id) && inner.actors.len() >= MAX_SUBSCRIBERS {
        // Connections that never ran (a WebSocket upgrade that failed: the client left before
        // the 101) were never disconnected: what is left of them goes before any id is refused.
        inner.actors.retain(|_, a| !idle(a));
        if inner.actors.len() >= MAX_SUBSCRIBERS {
            return Err(ActorError::TooMany(MAX_SUBSCRIBERS));
        }
    }
    Ok(inner.actors.entry(id.to_string()).or_default())
}

/// Nothing is left of an actor: no subscription, no pending action, no live connection.
fn idle(a: &Actor) -> bool {
    a.subscriptions.is_empty() && a.pending.is_empty() && a.channel.as_ref().is_none_or(|(_, tx)| tx.is_closed())
}

/// Drops `id` when nothing is left of it ([`idle`]), so ids that connected once or
/// unsubscribed from everything do not count against [`MAX_SUBSCRIBERS`].
fn forget_if_idle(inner: &mut Inner, id: &str) {
    if inner.actors.get(id).is_some_and(idle) {
        inner.actors.remove(id);
    }
}

fn checked_timeout(sub: &Subscription) -> Result<(), ActorError> {
    match sub.timeout > MAX_SUBSCRIPTION_TIMEOUT_SECS {
        true => Err(ActorError::BadTimeout(sub.timeout)),
        false => Ok(()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(timeout: u64) -> Subscription {
        Subscription { message_type: "collect".into(), wait_for_completion: true, timeout }
    }

    #[test]
    fn timeouts_past_the_cap_are_refused_and_clamped_when_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("subscribers.json");
        let actors = Actors::open(Some(file.clone())).unwrap();
        assert_eq!(actors.subscribe("w", sub(u64::MAX / 2 + 1)).unwrap_err(), ActorError::BadTimeout(u64::MAX / 2 + 1));
        assert_eq!(
            actors.replace("w", vec![sub(MAX_SUBSCRIPTION_TIMEOUT_SECS + 1)]).unwrap_err(),
            ActorError::BadTimeout(MAX_SUBSCRIPTION_TIMEOUT_SECS + 1)
        );
        assert!(actors.subscribe("w", sub(MAX_SUBSCRIPTION_TIMEOUT_SECS)).is_ok());
        // A file an older version wrote, with the overflowing timeout of the issue.
        std::fs::write(&file, r#"{"w": {"collect": {"message_type": "collect", "timeout": 9223372036854775808}}}"#)
            .unwrap();
        let loaded = Actors::open(Some(file)).unwrap();
        assert_eq!(loaded.get("w").unwrap().subscriptions["collect"].timeout, MAX_SUBSCRIPTION_TIMEOUT_SECS);
    }

    #[test]
    fn deadlines_never_overflow() {
        let now = tokio::time::Instant::now();
        let cap = std::time::Duration::from_secs(MAX_SUBSCRIPTION_TIMEOUT_SECS);
        assert_eq!(deadline(now, u64::MAX), now + cap);
        assert_eq!(deadline(now, 10), now + std::time::Duration::from_secs(10));
    }

    #[test]
    fn subscriber_ids_are_bounded_and_idle_ones_forgotten() {
        let actors = Actors::open(None).unwrap();
        for i in 0..MAX_SUBSCRIBERS {
            actors.subscribe(&format!("w{i}"), sub(1)).unwrap();
        }
        assert_eq!(actors.subscribe("one-more", sub(1)).unwrap_err(), ActorError::TooMany(MAX_SUBSCRIBERS));
        assert_eq!(actors.connect("one-more").unwrap_err(), ActorError::TooMany(MAX_SUBSCRIBERS));
        assert!(actors.subscribe("w0", sub(2)).is_ok(), "known ids keep working");
        // Unsubscribing from everything frees the id.
        actors.unsubscribe("w0", "collect").unwrap();
        assert!(actors.get("w0").is_none());
        let (n, _rx, _) = actors.connect("one-more").unwrap();
        assert!(actors.connect("another").is_err());
        actors.disconnect("one-more", n);
        assert!(actors.get("one-more").is_none(), "a connection without subscriptions leaves nothing behind");
    }

    /// Connections whose WebSocket never ran (the upgrade failed, so nothing disconnected
    /// them) do not use up the ids: once the cap is reached they make room.
    #[test]
    fn connections_that_never_ran_do_not_use_up_the_ids() {
        let actors = Actors::open(None).unwrap();
        for i in 0..MAX_SUBSCRIBERS {
            // The receiver is dropped with the upgrade callback that held it.
            let (_, rx, _) = actors.connect(&format!("gone{i}")).unwrap();
            drop(rx);
        }
        let (_n, _live, _) = actors.connect("a-new-one").expect("room made for a new id");
        assert!(actors.get("gone0").is_none(), "what was left of them is gone");
        assert!(actors.get("a-new-one").is_some_and(|v| v.connected));
    }
}
