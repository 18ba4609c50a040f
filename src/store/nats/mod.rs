//! [`NatsLog`]: the shared backend of [`EventLog`] on NATS JetStream, so that several
//! routers act as one (`store.backend = "nats"`). What the local log keeps in one process
//! lives in JetStream here:
//!
//! - **events**: one stream, one subject per event, `<prefix>.ev.<priority>.<id>`
//!   (priority 0 for events no route takes). A producer's 202 waits for the PubAck. The
//!   subject makes an event findable by id (a status lookup before it is finished) and
//!   lets each priority have its own consumer;
//! - **work**: one durable pull consumer per priority level, shared by every instance.
//!   An instance takes from the highest level with work, passing over lower ones at most
//!   [`STARVATION_LIMIT`] times; it sends progress while it holds an event, and acks it
//!   once the outcome is written. An instance that dies leaves its events to be delivered
//!   to another after the ack wait. A redelivered event already finished is acked unrun;
//! - **statuses** (`<stream>_STATUS`): the final status of every event, and the first of
//!   events with a producer-given id (whose id must be claimed); in progress and retrying
//!   are this instance's own (as are emitted events' statuses: their root is the unit);
//! - **idempotency** (`<stream>_KEYS`): producer, source and id hashed to the first
//!   event's id (and the claim of the append that made it), created only if absent, aged
//!   out by the bucket after the window;
//! - **retries** (`<stream>_RETRY`): a retry handed back ([`EventLog::defer`]) keeps the
//!   router's note of what is left here, and the event is NAKed with its back-off;
//! - **what the others did**: every instance subscribes to the event subjects (core NATS,
//!   no consumer state) and to `<prefix>.emitted` and `<prefix>.done`, so its live
//!   subscribers, RPC callers and waiting workflow steps see events admitted, emitted and
//!   finished by any instance. These are at-most-once, like a live tail.
//!
//! Single-event appends made while the scheduler runs one round of ready tasks are
//! published together ([`publish`]: one write to the server for many producers' requests).
//!
//! Beside the log, in their own modules: shared dead letters ([`letters`]), cluster
//! leases ([`leases`]), uploaded plugins ([`plugins`]) and who is there ([`instances`]); the config service's documents
//! live in `<stream>_CONFIG` (`crate::store::config_docs`).

pub mod config;
pub mod instances;
pub mod leases;
pub mod letters;
pub mod plugins;
mod publish;

pub use config::NatsConfig;

use super::status::{self, State, Status, StatusBoard};
use super::{Appended, Batch, EventLog, Feed, StoreError};
use crate::event::{Event, Outcome};
use async_nats::jetstream::{self, consumer, kv, stream, AckKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use futures_util::StreamExt;
use sha2::Digest;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use tokio::sync::Notify;

/// The header naming the instance that published a message: an instance skips its own
/// when it listens for what the others did.
pub const INSTANCE_HEADER: &str = "Eventyard-Instance";
/// Priority levels 1..=5 each have a consumer; 0 is the subject of events no route takes.
const LEVELS: u8 = 5;
/// Times a waiting lower level is passed over by higher ones before it is served (as the
/// in-process queue does).
pub const STARVATION_LIMIT: u32 = 8;
/// Events a consumer's pull asks for at once: enough to keep the workers fed between
/// round trips, few enough that what an instance holds unstarted stays small.
const PULL_BATCH: usize = 64;
/// Heartbeat of a pull: a missing one tells the client the server went away.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Wait before opening the consumers again after the server went away.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
/// How long `flush` waits for outcomes still being written (graceful shutdown).
const FLUSH_WAIT: Duration = Duration::from_secs(10);
/// How long the client waits for the first connection before the router refuses to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Room an event's envelope (id, type, time, source, headers) takes in its message beside
/// the data, generously: ids and sources are bounded well below it.
const ENVELOPE_ALLOWANCE: usize = 2048;
/// JetStream's deduplication window for `Nats-Msg-Id` (a publisher's retry of an append).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

pub struct NatsLog {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    /// Appends leave through it (single events grouped per scheduler round).
    publisher: Arc<publish::Publisher>,
    stream: stream::Stream,
    statuses: kv::Store,
    keys: kv::Store,
    /// What is left of deferred events' work (their retries), by id.
    notes: kv::Store,
    /// Held events that came with a note (removed once they finish).
    noted: Mutex<std::collections::HashSet<String>>,
    prefix: String,
    stream_name: String,
    /// This process's id in [`INSTANCE_HEADER`].
    instance: String,
    /// This instance's own view: events it holds or finished, emitted events.
    local: StatusBoard,
    /// Events this instance holds, by id, until their outcome is written.
    inflight: Mutex<HashMap<String, jetstream::Message>>,
    feed: Mutex<Option<Arc<dyn Feed>>>,
    attached: AtomicBool,
    /// Outcomes being written (flush waits for them).
    writing: AtomicUsize,
    written: Notify,
    config: NatsConfig,
    runtime: tokio::runtime::Handle,
    redelivered: AtomicU64,
    deferred: AtomicU64,
    skipped_finished: AtomicU64,
    outcome_retries: AtomicU64,
}

/// An event as the body of its message ([`Event::write_json`]).
fn message_body(event: &Event) -> Bytes {
    let mut out = Vec::with_capacity(event.data.text().len() + 256);
    event.write_json(&mut out);
    out.into()
}

/// A NATS failure as the store's error (also the NATS source's).
pub(crate) fn nats(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Shared { message: format!("{what}: {e}") }
}

/// An id as one subject token and KV key: ids of letters, digits, `-` and `_` (UUIDs) as
/// they are; any other as `=` and its hex (no plain id contains `=`, so none collide).
pub fn id_key(id: &str) -> String {
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return id.to_string();
    }
    let mut key = String::with_capacity(1 + 2 * id.len());
    key.push('=');
    for b in id.bytes() {
        let _ = write!(key, "{b:02x}");
    }
    key
}

/// The idempotency key of a producer-given id: its producer's token, the event's source
/// and the id, hashed (the token is a secret and must not appear in a key).
pub fn dedup_key(token: Option<&str>, source: Option<&str>, id: &str) -> String {
    let mut h = sha2::Sha256::new();
    for part in [token.unwrap_or(""), source.unwrap_or(""), id] {
        h.update(part.len().to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()[..16].iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// How long an append waits for the event of an idempotency key another append holds to be
/// stored (that append is most likely publishing it) before it answers "try again".
const CLAIM_WAIT: Duration = Duration::from_millis(250);
/// How often it looks meanwhile.
const CLAIM_RECHECK: Duration = Duration::from_millis(25);
/// Keys of other appends looked at at once by one append (a re-sent batch of thousands of
/// events must not send the server thousands of look-ups at once).
const CLAIM_LOOKUPS: usize = 64;

/// An idempotency key's value: the id it stands for, a newline, then the claim of the append
/// that made it (a UUID per append). The claim tells an append its own key: when the
/// server stores a key but its answer comes too late (the client's request timeout, a
/// reconnect), async-nats reads the key back and answers `AlreadyExists`, and the append
/// would otherwise take its own event for an earlier one and store nothing.
fn key_value(id: &str, claim: &str) -> Bytes {
    Bytes::from(format!("{id}\n{claim}"))
}

/// The id and the claim of a key's value ([`key_value`]); values written before claims
/// existed are the id alone.
fn key_parts(value: &[u8]) -> (String, Option<String>) {
    let value = String::from_utf8_lossy(value);
    match value.rsplit_once('\n') {
        Some((id, claim)) if uuid::Uuid::try_parse(claim).is_ok() => (id.to_string(), Some(claim.to_string())),
        _ => (value.into_owned(), None),
    }
}

/// What creating a key found.
enum Created {
    /// This call made it (or made it and lost the answer: the key names this call's claim).
    Made,
    /// Another append's: its entry, `None` when it was given back in the meantime.
    Theirs(Option<kv::Entry>),
}

/// Creates idempotency key `key` in `keys` for event `id` by the append whose claim is
/// `claim`; a key found naming that claim was made by this call, its answer lost (see
/// [`key_value`]).
async fn create_key(keys: &kv::Store, key: &str, id: &str, claim: &str) -> Result<Created, kv::CreateError> {
    match keys.create(key, key_value(id, claim)).await {
        Ok(_) => Ok(Created::Made),
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
            let entry = keys.entry(key).await.ok().flatten().filter(|e| e.operation == kv::Operation::Put);
            match entry {
                Some(e) if key_parts(&e.value).1.as_deref() == Some(claim) => Ok(Created::Made),
                entry => Ok(Created::Theirs(entry)),
            }
        }
        Err(e) => Err(e),
    }
}

/// The level an event is published at: its priority when a route takes it, else 0.
fn level_of(event: &Event, routed: bool) -> u8 {
    if routed {
        event.priority.clamp(1, LEVELS)
    } else {
        0
    }
}

/// An accepted event's status until it is processed: queued, or finished at once when no
/// route takes it.
fn first_state(routed: bool) -> State {
    if routed {
        State::Queued
    } else {
        State::Processed { outcome: Outcome::default() }
    }
}

fn is_final(state: &State) -> bool {
    matches!(state, State::Processed { .. } | State::DeadLettered { .. })
}

fn status_of(event: &Event, state: State) -> Status {
    Status {
        accepted_at: time::OffsetDateTime::now_utc(),
        id: event.id.as_str().into(),
        type_name: event.type_name,
        priority: event.priority,
        state,
    }
}

impl NatsLog {
    /// Connects and makes sure the stream, its consumers and the buckets exist (created
    /// the first time, updated to `config` after). `window`: how long producer ids are
    /// remembered for deduplication.
    pub async fn connect(config: &NatsConfig, window: Duration) -> Result<Self, StoreError> {
        let client = connect_client(config).await?;
        let js = jetstream::new(client.clone());
        let max_age = Duration::from_secs(config.max_age_secs);
        let prefix = config.subject_prefix.clone();
        js.create_or_update_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![format!("{prefix}.ev.>")],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: DUPLICATE_WINDOW,
            max_age,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|e| nats("create the event stream", e))?;
        let stream = js.get_stream(&config.stream).await.map_err(|e| nats("open the event stream", e))?;
        let statuses = bucket(&js, config, "STATUS", max_age).await?;
        let keys = bucket(&js, config, "KEYS", window.max(Duration::from_secs(1))).await?;
        let notes = bucket(&js, config, "RETRY", max_age).await?;
        let log = NatsLog {
            shared: Arc::new(Shared {
                client,
                publisher: publish::Publisher::new(js.clone(), tokio::runtime::Handle::current()),
                js,
                stream,
                statuses,
                keys,
                notes,
                noted: Mutex::default(),
                prefix,
                stream_name: config.stream.clone(),
                instance: uuid::Uuid::now_v7().to_string(),
                local: StatusBoard::default(),
                inflight: Mutex::default(),
                feed: Mutex::default(),
                attached: AtomicBool::new(false),
                writing: AtomicUsize::new(0),
                written: Notify::new(),
                config: config.clone(),
                runtime: tokio::runtime::Handle::current(),
                redelivered: AtomicU64::new(0),
                deferred: AtomicU64::new(0),
                skipped_finished: AtomicU64::new(0),
                outcome_retries: AtomicU64::new(0),
            }),
            tasks: Mutex::default(),
        };
        for level in 1..=LEVELS {
            log.shared.consumer(level).await?;
        }
        Ok(log)
    }

    /// The JetStream context (the other shared parts, dead letters and documents, keep
    /// their buckets next to the log's).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.shared.js
    }

    /// Copies of the stream and buckets (`store.nats.replicas`).
    pub fn replicas(&self) -> usize {
        self.shared.config.replicas
    }

    /// The stream's name, which the other buckets are named after.
    pub fn stream_name(&self) -> &str {
        &self.shared.stream_name
    }

    /// A bucket of this log's (`<stream>_<suffix>`), for the other shared parts.
    pub async fn bucket(&self, suffix: &str, max_age: Duration) -> Result<kv::Store, StoreError> {
        bucket(&self.shared.js, &self.shared.config, suffix, max_age).await
    }

    /// This process's id among the instances.
    pub fn instance(&self) -> &str {
        &self.shared.instance
    }

    /// Runs `task` for as long as the log lives.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.lock().expect("tasks").push(self.shared.runtime.spawn(task));
    }

    /// The runtime the log's tasks run on.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.shared.runtime
    }

    /// Events redelivered to this instance (another held them and died, or an ack was lost).
    pub fn redelivered(&self) -> u64 {
        self.shared.redelivered.load(Ordering::Relaxed)
    }
}

/// A client connected to `config`'s servers (token, credentials, TLS as configured); it
/// reconnects by itself for as long as it lives, and says so in the log.
pub async fn connect_client(config: &NatsConfig) -> Result<async_nats::Client, StoreError> {
    let mut options = async_nats::ConnectOptions::new()
        .name("eventyard")
        // This instance's own publishes are not delivered back to its subscriptions: each
        // instance listens to every event subject, and its own events (all of them, on one
        // instance) would cost the server a delivery and this process a parse each.
        .no_echo()
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                other => tracing::info!(event = %other, "NATS"),
            }
        });
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.credentials {
        options = options.credentials_file(path).await.map_err(|e| StoreError::io(path, e))?;
    }
    if config.tls {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.ca {
        options = options.add_root_certificates(ca.clone());
    }
    options.connect(config.urls.clone()).await.map_err(|e| nats(&format!("connect to {:?}", config.urls), e))
}

/// The KV bucket `<stream>_<suffix>` (created, or updated to `config`); `max_age` zero:
/// entries stay until deleted.
async fn bucket(
    js: &jetstream::Context,
    config: &NatsConfig,
    suffix: &str,
    max_age: Duration,
) -> Result<kv::Store, StoreError> {
    let name = format!("{}_{suffix}", config.stream);
    js.create_or_update_key_value(kv::Config {
        bucket: name.clone(),
        history: 1,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        ..Default::default()
    })
    .await
    .map_err(|e| nats(&format!("create the bucket {name}"), e))
}

impl Drop for NatsLog {
    fn drop(&mut self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

impl Shared {
    fn subject(&self, level: u8, id: &str) -> String {
        debug_assert!(level <= LEVELS, "one digit");
        let key = id_key(id);
        let mut subject = String::with_capacity(self.prefix.len() + ".ev.0.".len() + key.len());
        subject.push_str(&self.prefix);
        subject.push_str(".ev.");
        subject.push(char::from(b'0' + level));
        subject.push('.');
        subject.push_str(&key);
        subject
    }

    /// The durable consumer of one priority level (created or updated to the config).
    async fn consumer(&self, level: u8) -> Result<consumer::Consumer<consumer::pull::Config>, StoreError> {
        let name = format!("work-p{level}");
        self.stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                filter_subject: format!("{}.ev.{level}.>", self.prefix),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(self.config.ack_wait_ms),
                max_ack_pending: self.config.max_ack_pending,
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| nats("create a work consumer", e))
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(INSTANCE_HEADER, self.instance.as_str());
        h
    }

    fn own(&self, message: &async_nats::Message) -> bool {
        message.headers.as_ref().and_then(|h| h.get(INSTANCE_HEADER)).is_some_and(|v| v.as_str() == self.instance)
    }

    async fn kv_status(&self, id: &str) -> Option<Status> {
        match self.statuses.get(id_key(id)).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a status from NATS");
                None
            }
        }
    }

    /// Claims producer ids and statuses for a batch's keyed events; writes nothing else.
    /// Answers the batch as [`Appended`] and what to undo if the publish fails.
    async fn claim(&self, batch: Batch<'_>) -> Result<(Appended, Undo), StoreError> {
        let mut out = Appended { ids: Vec::with_capacity(batch.events.len()), ..Appended::default() };
        let mut undo = Undo::default();
        let now = time::OffsetDateTime::now_utc();
        if !batch.events.iter().any(|e| e.keyed) {
            // Router-made ids only (most single events): nothing to claim on the server.
            for (mut e, routed) in batch.events.into_iter().zip(batch.routed) {
                self.name(&mut e, routed, now);
                out.ids.push(e.id.clone());
                out.fresh.push(e);
                out.routed.push(routed);
            }
            return Ok((out, undo));
        }
        // Producer ids: duplicates within the batch first, then the server (all at once).
        let dedup: Vec<Option<String>> = batch
            .events
            .iter()
            .map(|e| e.keyed.then(|| dedup_key(batch.producer, e.source.as_deref(), &e.id)))
            .collect();
        let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut duplicate_of: Vec<Option<usize>> = vec![None; dedup.len()];
        for (i, key) in dedup.iter().enumerate() {
            if let Some(key) = key {
                match first_in_batch.get(key.as_str()) {
                    Some(&first) => duplicate_of[i] = Some(first),
                    None => {
                        first_in_batch.insert(key, i);
                    }
                }
            }
        }
        let events = &batch.events;
        let claim = uuid::Uuid::now_v7().to_string();
        let claim = claim.as_str();
        let creates = dedup.iter().enumerate().filter_map(|(i, key)| {
            let key = key.as_ref().filter(|_| duplicate_of[i].is_none())?;
            Some(async move { (i, create_key(&self.keys, key, &events[i].id, claim).await) })
        });
        let mut earlier: HashMap<usize, String> = HashMap::new();
        let created = join_all(creates).await;
        // Every key this append made is given back on failure, those made after a failed
        // one included.
        undo.keys.extend(
            created.iter().filter(|(_, c)| matches!(c, Ok(Created::Made))).filter_map(|(i, _)| dedup[*i].clone()),
        );
        let mut theirs = Vec::new();
        for (i, created) in created {
            match created {
                Ok(Created::Made) => {}
                Ok(Created::Theirs(entry)) => theirs.push((i, entry)),
                Err(e) => {
                    self.undo(undo).await;
                    return Err(nats("claim an idempotency key", e));
                }
            }
        }
        // Keys other appends hold: what each stands for, a bounded number looked at at once.
        let routed = &batch.routed;
        let firsts = futures_util::stream::iter(theirs.into_iter().map(|(i, entry)| {
            let key = dedup[i].as_deref().expect("keyed");
            let level = level_of(&events[i], routed[i]);
            async move { (i, self.earlier(key, entry, &events[i].id, level).await) }
        }))
        .buffer_unordered(CLAIM_LOOKUPS)
        .collect::<Vec<_>>();
        for (i, first) in firsts.await {
            match first {
                Ok(id) => {
                    earlier.insert(i, id);
                }
                Err(e) => {
                    self.undo(undo).await;
                    return Err(e);
                }
            }
        }
        // Keyed events claim their id's status (another producer may use the same id).
        let mut fresh: Vec<(usize, Event, bool)> = Vec::new();
        for (i, (e, routed)) in batch.events.into_iter().zip(batch.routed).enumerate() {
            if duplicate_of[i].is_none() && !earlier.contains_key(&i) {
                fresh.push((i, e, routed));
            }
        }
        let claims = fresh.iter().filter(|(_, e, _)| e.keyed).map(|(i, e, routed)| {
            let value =
                Bytes::from(serde_json::to_vec(&status_of(e, first_state(*routed))).expect("statuses serialise"));
            // No read-back here: a status does not name the append that wrote it (the same
            // event from another producer writes the same bytes). One whose answer was lost
            // makes this event take a new id, which is safe: the id's entry stays queued.
            async move { (*i, &e.id, self.statuses.create(id_key(&e.id), value).await) }
        });
        let mut taken: Vec<usize> = Vec::new();
        let mut failed = None;
        for (i, id, created) in join_all(claims).await {
            match created {
                // Given back on failure (below, or should the publish fail).
                Ok(_) => undo.status_ids.push(id.clone()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => taken.push(i),
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            self.undo(undo).await;
            return Err(nats("claim an event's status", e));
        }
        let mut index_of = vec![usize::MAX; dedup.len()];
        for (i, e, routed) in &mut fresh {
            if taken.contains(i) {
                // Another producer's event has this id: this one gets its own.
                e.keyed = false;
                self.name(e, *routed, now);
                if let Some(key) = &dedup[*i] {
                    let _ = self.keys.put(key, key_value(&e.id, claim)).await;
                }
            } else if !e.keyed {
                self.name(e, *routed, now);
            }
            index_of[*i] = out.fresh.len();
            out.fresh.push(e.clone());
            out.routed.push(*routed);
        }
        for i in 0..dedup.len() {
            let id = match (duplicate_of[i], earlier.get(&i)) {
                (Some(first), _) => match earlier.get(&first) {
                    Some(id) => id.clone(),
                    None => out.fresh[index_of[first]].id.clone(),
                },
                (None, Some(id)) => id.clone(),
                (None, None) => out.fresh[index_of[i]].id.clone(),
            };
            if index_of[i] == usize::MAX {
                out.duplicates += 1;
            }
            out.ids.push(id);
        }
        Ok((out, undo))
    }

    /// Publishes an event a plugin emitted on this instance to the others' subscribers
    /// (`<prefix>.emitted`, not stored: emitted events live in their parent's outcome).
    fn tell_emitted(&self, event: &Event) {
        let payload = message_body(event);
        let (client, subject, headers) = (self.client.clone(), format!("{}.emitted", self.prefix), self.headers());
        self.runtime.spawn(async move {
            let _ = client.publish_with_headers(subject, headers, payload).await;
        });
    }

    /// Gives an event whose id the router makes a name from this instance's status board,
    /// with its status until the publish is acknowledged (see [`NatsLog::append`]): found
    /// again without the board's index, when it is answered and when the event is finished.
    /// (`keyed` stays false: the append tells the named events from the others by it.)
    /// `now`: when the router accepted it, read once per batch.
    fn name(&self, event: &mut Event, routed: bool, now: time::OffsetDateTime) {
        event.id = self.local.insert_named(event.type_name, event.priority, first_state(routed), now);
    }

    /// The id that idempotency key `key`, made by another append (`entry`), stands for, once
    /// that event is stored: this append (of event `id`, published at `level`) is its
    /// duplicate. A duplicate is not answered for an event that is not in the stream, since
    /// its producer would take it as accepted:
    /// - while the key is younger than `claim_timeout_ms` its append may still be publishing:
    ///   this one waits up to [`CLAIM_WAIT`], then fails with a retryable error (503: the
    ///   producer tries again); so does one whose look-ups the server did not answer;
    /// - an older key whose event is not in the stream was most likely left by an append that
    ///   failed and could not give it back (the server went away between its claim and its
    ///   publish): it is cleared, with the id's status when that is as old, at the revisions
    ///   seen (a newer claim stays), and this append fails the same way, so the next try is
    ///   stored;
    /// - a key older than the stream's `max_age` is answered as a duplicate: its event, if it
    ///   was stored, has aged out (one left by a failed append is not told apart then).
    ///
    /// Assumes the instances' clocks and the server's agree within `claim_timeout_ms`.
    async fn earlier(&self, key: &str, entry: Option<kv::Entry>, id: &str, level: u8) -> Result<String, StoreError> {
        let retry = |why: &str| nats("claim an idempotency key", format!("{why}; try again"));
        let Some(entry) = entry else {
            return Err(retry("an earlier append of this id could not be read back (it may have just failed)"));
        };
        let first = Some(key_parts(&entry.value).0).filter(|first| !first.is_empty()).unwrap_or_else(|| id.to_string());
        let (claim_timeout, max_age) =
            (Duration::from_millis(self.config.claim_timeout_ms), Duration::from_secs(self.config.max_age_secs));
        let age_of = |created: time::OffsetDateTime| {
            Duration::try_from(time::OffsetDateTime::now_utc() - created).unwrap_or_default()
        };
        let wait_until = std::time::Instant::now() + CLAIM_WAIT;
        loop {
            let age = age_of(entry.created);
            if age >= max_age {
                return Ok(first);
            }
            match self.stored(&first, level).await {
                Some(true) => return Ok(first),
                None => return Err(retry("cannot tell whether an earlier append of this id was stored")),
                Some(false) if age >= claim_timeout => break,
                Some(false) if std::time::Instant::now() >= wait_until => {
                    return Err(retry("an earlier append of this id is still under way"));
                }
                Some(false) => tokio::time::sleep(CLAIM_RECHECK).await,
            }
        }
        // The status first, and only one as old as the key: a younger one is a newer append's.
        match self.statuses.entry(id_key(&first)).await {
            Err(_) => return Err(retry("cannot read the status of an earlier append of this id")),
            Ok(Some(status)) if status.operation == kv::Operation::Put => {
                if age_of(status.created) < claim_timeout {
                    return Err(retry("an earlier append of this id is still under way"));
                }
                if self.statuses.purge_expect_revision(id_key(&first), Some(status.revision)).await.is_err() {
                    return Err(retry("an earlier append of this id left its claim, which could not be cleared yet"));
                }
            }
            Ok(_) => {}
        }
        tracing::warn!(event = %first, "an idempotency key left by a failed append: cleared");
        let _ = self.keys.purge_expect_revision(key, Some(entry.revision)).await;
        Err(retry("an earlier append of this id failed and left its claim, now cleared"))
    }

    /// Whether event `id`'s message is in the stream: looked up at `level` (where this
    /// producer's event would be) first, then at the others; `None` when the server did not
    /// answer a look-up.
    async fn stored(&self, id: &str, level: u8) -> Option<bool> {
        let found = |r: Result<_, stream::LastRawMessageError>| match r {
            Ok(_) => Some(true),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Some(false),
            Err(_) => None,
        };
        if found(self.stream.get_last_raw_message_by_subject(&self.subject(level, id)).await)? {
            return Some(true);
        }
        let mut stored = Some(false);
        for (_, r) in self.messages(id, (0..=LEVELS).filter(|l| *l != level)).await {
            match found(r) {
                Some(true) => return Some(true),
                Some(false) => {}
                None => stored = None,
            }
        }
        stored
    }

    /// Event `id`'s message looked up at `levels` (0: no route took it), at once.
    async fn messages(
        &self,
        id: &str,
        levels: impl Iterator<Item = u8>,
    ) -> Vec<(u8, Result<jetstream::message::StreamMessage, stream::LastRawMessageError>)> {
        let lookups = levels.map(|level| {
            let subject = self.subject(level, id);
            async move { (level, self.stream.get_last_raw_message_by_subject(&subject).await) }
        });
        join_all(lookups).await
    }

    /// Gives back what a failed append claimed (best effort: the server may be gone, and
    /// then the keys age out with the bucket).
    async fn undo(&self, undo: Undo) {
        for key in undo.keys {
            let _ = self.keys.purge(&key).await;
        }
        for id in undo.status_ids {
            let _ = self.statuses.purge(id_key(&id)).await;
        }
        for seq in undo.published {
            let _ = self.stream.delete_message(seq).await;
        }
    }

    /// Takes one delivered event: an instance now holds it until its outcome is written.
    async fn deliver(&self, message: jetstream::Message) {
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let event: Event = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(subject = %message.subject, error = %e, "not an event on the event stream; terminated");
                let _ = message.ack_with(AckKind::Term).await;
                return;
            }
        };
        let mut note = None;
        if delivered > 1 {
            self.redelivered.fetch_add(1, Ordering::Relaxed);
            if self.kv_status(&event.id).await.is_some_and(|s| is_final(&s.state)) {
                // Finished, its ack lost (or its holder died between the two): not again.
                self.skipped_finished.fetch_add(1, Ordering::Relaxed);
                let _ = message.ack().await;
                return;
            }
            // Deferred (a retry): what is left of its work.
            note = self.notes.get(id_key(&event.id)).await.ok().flatten().map(|b| b.to_vec());
            if note.is_some() {
                self.noted.lock().expect("noted").insert(event.id.clone());
            }
        }
        self.local.insert(&event.id, event.type_name, event.priority, State::Queued);
        self.inflight.lock().expect("inflight").insert(event.id.clone(), message);
        let feed = self.feed.lock().expect("feed").clone();
        if let Some(feed) = feed {
            feed.work(event, note).await;
        }
    }

    /// Writes a finished event's status (until the server takes it), then acks its message
    /// and tells the other instances.
    async fn write_outcome(&self, status: Status, message: Option<jetstream::Message>, noted: bool) {
        let value: Bytes = serde_json::to_vec(&status).expect("statuses serialise").into();
        let key = id_key(&status.id);
        while let Err(e) = self.statuses.put(&key, value.clone()).await {
            self.outcome_retries.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(event = %status.id, error = %e, "cannot write an outcome to NATS yet; retrying");
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        if noted {
            let _ = self.notes.purge(&key).await;
        }
        if let Some(message) = message {
            if let Err(e) = message.ack().await {
                tracing::warn!(event = %status.id, error = %e, "cannot ack a finished event; it will come back and be skipped");
            }
        }
        let _ = self.client.publish_with_headers(format!("{}.done", self.prefix), self.headers(), value).await;
    }

    /// Hands this instance work from the consumers, highest priority first, until the
    /// server goes away; then opens them again.
    async fn pull(self: Arc<Self>) {
        loop {
            let mut streams = Vec::new();
            for level in (1..=LEVELS).rev() {
                let opened = match self.consumer(level).await {
                    Ok(c) => c
                        .stream()
                        .max_messages_per_batch(PULL_BATCH)
                        .heartbeat(PULL_HEARTBEAT)
                        .messages()
                        .await
                        .map_err(|e| nats("pull", e)),
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(s) => streams.push(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot pull work from NATS yet");
                        break;
                    }
                }
            }
            if streams.len() == usize::from(LEVELS) {
                self.take_from(&mut streams).await;
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }

    /// Delivers messages from `streams` (highest level first) until one fails for good.
    async fn take_from(&self, streams: &mut [consumer::pull::Stream]) {
        let mut passed_over = 0u32;
        loop {
            let lowest_first = passed_over >= STARVATION_LIMIT;
            let next = futures_util::future::poll_fn(|cx| {
                let n = streams.len();
                for k in 0..n {
                    let i = if lowest_first { n - 1 - k } else { k };
                    if let Poll::Ready(item) = streams[i].poll_next_unpin(cx) {
                        return Poll::Ready((i, item));
                    }
                }
                Poll::Pending
            })
            .await;
            match next {
                (_, None) => return,
                (_, Some(Err(e))) => match e.kind() {
                    consumer::pull::MessagesErrorKind::MissingHeartbeat => {
                        tracing::warn!("no heartbeat from NATS; waiting for it");
                    }
                    _ => {
                        tracing::warn!(error = %e, "pulling work from NATS failed; opening the consumers again");
                        return;
                    }
                },
                (i, Some(Ok(message))) => {
                    passed_over = if i == streams.len() - 1 || lowest_first { 0 } else { passed_over + 1 };
                    self.deliver(message).await;
                }
            }
        }
    }

    /// Keeps the events this instance holds from being handed to another while it works.
    async fn keep_alive(self: Arc<Self>) {
        let every = Duration::from_millis(self.config.ack_wait_ms / 3);
        loop {
            tokio::time::sleep(every).await;
            let held: Vec<jetstream::Message> = self.inflight.lock().expect("inflight").values().cloned().collect();
            for message in held {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }

    /// Tells the feed what the other instances admitted, emitted and finished.
    async fn listen(self: Arc<Self>) {
        let subscribe = |subject: String| {
            let client = self.client.clone();
            async move { client.subscribe(subject).await }
        };
        let (Ok(events), Ok(emitted), Ok(done)) = (
            subscribe(format!("{}.ev.>", self.prefix)).await,
            subscribe(format!("{}.emitted", self.prefix)).await,
            subscribe(format!("{}.done", self.prefix)).await,
        ) else {
            tracing::error!("cannot subscribe to the other instances' events");
            return;
        };
        let mut all = futures_util::stream::select_all([
            events.map(|m| (Kind::Admitted, m)).boxed(),
            emitted.map(|m| (Kind::Emitted, m)).boxed(),
            done.map(|m| (Kind::Done, m)).boxed(),
        ]);
        while let Some((kind, message)) = all.next().await {
            if self.own(&message) {
                continue;
            }
            let Some(feed) = self.feed.lock().expect("feed").clone() else { continue };
            match kind {
                Kind::Admitted | Kind::Emitted => {
                    if let Ok(event) = serde_json::from_slice::<Event>(&message.payload) {
                        feed.admitted(event, kind == Kind::Emitted);
                    }
                }
                Kind::Done => {
                    if let Ok(Status {
                        id,
                        state: State::Processed { outcome } | State::DeadLettered { outcome },
                        ..
                    }) = serde_json::from_slice::<Status>(&message.payload)
                    {
                        feed.finished(&id, &outcome);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Admitted,
    Emitted,
    Done,
}

/// What a failed append gives back.
#[derive(Default)]
struct Undo {
    keys: Vec<String>,
    status_ids: Vec<String>,
    published: Vec<u64>,
}

impl EventLog for NatsLog {
    fn append<'a>(&'a self, batch: Batch<'a>) -> BoxFuture<'a, Result<Appended, StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            // Refused before anything is claimed: the server takes no message above its
            // `max_payload` (1 MB by default; raise it for larger events).
            let limit = s.client.max_payload();
            if let Some(e) = batch.events.iter().find(|e| e.data.text().len() + ENVELOPE_ALLOWANCE > limit) {
                let bytes = (e.data.text().len() + ENVELOPE_ALLOWANCE) as u64;
                return Err(StoreError::TooLarge { bytes, limit: limit.saturating_sub(ENVELOPE_ALLOWANCE) as u64 });
            }
            let (appended, mut undo) = s.claim(batch).await?;
            let messages = appended.fresh.iter().zip(&appended.routed).map(|(e, routed)| {
                let level = level_of(e, *routed);
                let publish = jetstream::message::PublishMessage::build()
                    .payload(message_body(e))
                    .message_id(&e.id)
                    .header(INSTANCE_HEADER, s.instance.as_str());
                (s.subject(level, &e.id), publish)
            });
            let mut failed = None;
            for acked in s.publisher.publish_all(messages.collect()).await {
                match acked {
                    Ok(seq) => undo.published.push(seq),
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                for named in appended.fresh.iter().filter(|e| !e.keyed) {
                    s.local.unclaim(&named.id);
                }
                s.undo(undo).await;
                return Err(e);
            }
            // This instance's view until the outcome is written (by whichever instance); the
            // events it named have theirs since the claim.
            for (e, routed) in appended.fresh.iter().zip(&appended.routed).filter(|(e, _)| e.keyed) {
                s.local.insert(&e.id, e.type_name, e.priority, first_state(*routed));
            }
            Ok(appended)
        })
    }

    fn progress(&self, id: &str, state: State) {
        self.shared.local.set(id, state);
    }

    fn track(&self, event: &Event, state: State) {
        let s = &self.shared;
        s.local.insert(&event.id, event.type_name, event.priority, state);
        s.tell_emitted(event);
    }

    fn track_named(&self, event: &mut Event, state: State) {
        let s = &self.shared;
        // An emitted event's time is the router's, taken as it was made.
        event.id = s.local.insert_named(event.type_name, event.priority, state, event.time);
        s.tell_emitted(event);
    }

    fn complete(&self, event: &Event, outcome: Outcome) {
        let s = self.shared.clone();
        let state = status::finished(outcome);
        s.local.insert(&event.id, event.type_name, event.priority, state.clone());
        let message = s.inflight.lock().expect("inflight").remove(&event.id);
        let noted = s.noted.lock().expect("noted").remove(&event.id);
        let status = status_of(event, state);
        s.writing.fetch_add(1, Ordering::SeqCst);
        self.shared.runtime.spawn(async move {
            s.write_outcome(status, message, noted).await;
            s.writing.fetch_sub(1, Ordering::SeqCst);
            s.written.notify_waiters();
        });
    }

    fn status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<Status>> {
        Box::pin(async move {
            let s = &self.shared;
            let kept = s.kv_status(id).await;
            if let Some(status) = kept.as_ref().filter(|st| is_final(&st.state)) {
                return Some(status.clone());
            }
            if let Some(own) = s.local.get(id) {
                return Some(own);
            }
            if kept.is_some() {
                return kept;
            }
            // Accepted, not finished (or taken by no route): its message says what it is.
            for (level, found) in s.messages(id, 0..=LEVELS).await {
                if let Ok(message) = found {
                    let event: Event = serde_json::from_slice(&message.payload).ok()?;
                    let state =
                        if level == 0 { State::Processed { outcome: Outcome::default() } } else { State::Queued };
                    return Some(status_of(&event, state));
                }
            }
            None
        })
    }

    fn take_recovered(&self) -> Vec<Event> {
        // What a stopped instance held comes back through the consumers.
        Vec::new()
    }

    fn flush(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let s = &self.shared;
            let _ = tokio::time::timeout(FLUSH_WAIT, async {
                loop {
                    let written = s.written.notified();
                    if s.writing.load(Ordering::SeqCst) == 0 {
                        return;
                    }
                    written.await;
                }
            })
            .await;
            let _ = s.client.flush().await;
        })
    }

    fn render_metrics(&self, out: &mut String) {
        let s = &self.shared;
        let connected = matches!(s.client.connection_state(), async_nats::connection::State::Connected);
        for (name, help, v) in [
            ("eventyard_nats_connected", "1 while connected to NATS.", u64::from(connected)),
            (
                "eventyard_nats_held_events",
                "Events this instance holds (handed out to it, not finished).",
                s.inflight.lock().expect("inflight").len() as u64,
            ),
            (
                "eventyard_nats_redelivered_total",
                "Events redelivered to this instance (another holder died, or an ack was lost).",
                s.redelivered.load(Ordering::Relaxed),
            ),
            (
                "eventyard_nats_deferred_total",
                "Retries handed back to the stream (delivered again after their back-off, to any instance).",
                s.deferred.load(Ordering::Relaxed),
            ),
            (
                "eventyard_nats_redelivered_finished_total",
                "Redelivered events found finished already, acked without running.",
                s.skipped_finished.load(Ordering::Relaxed),
            ),
            (
                "eventyard_nats_outcome_retries_total",
                "Outcome writes retried because NATS did not take them.",
                s.outcome_retries.load(Ordering::Relaxed),
            ),
        ] {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn defer(&self, event: &Event, delay: Duration, note: Vec<u8>) -> bool {
        let s = self.shared.clone();
        let Some(message) = s.inflight.lock().expect("inflight").remove(&event.id) else { return false };
        s.noted.lock().expect("noted").remove(&event.id);
        s.deferred.fetch_add(1, Ordering::Relaxed);
        let (key, id) = (id_key(&event.id), event.id.clone());
        s.writing.fetch_add(1, Ordering::SeqCst);
        self.shared.runtime.spawn(async move {
            let note: Bytes = note.into();
            while let Err(e) = s.notes.put(&key, note.clone()).await {
                tracing::warn!(event = %id, error = %e, "cannot keep a retry's note in NATS yet; retrying");
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
            // Delivered again after the back-off, to whichever instance pulls it then.
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                tracing::warn!(event = %id, error = %e, "cannot hand a retry back; it comes back after the ack wait");
            }
            s.writing.fetch_sub(1, Ordering::SeqCst);
            s.written.notify_waiters();
        });
        true
    }

    fn attach(&self, feed: Arc<dyn Feed>) {
        let s = &self.shared;
        *s.feed.lock().expect("feed") = Some(feed);
        if s.attached.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut tasks = self.tasks.lock().expect("tasks");
        tasks.push(s.runtime.spawn(s.clone().pull()));
        tasks.push(s.runtime.spawn(s.clone().keep_alive()));
        tasks.push(s.runtime.spawn(s.clone().listen()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_keys_that_cannot_collide() {
        assert_eq!(id_key("0196a0b2-7c1e-7d2f-9a3b-4c5d6e7f8091"), "0196a0b2-7c1e-7d2f-9a3b-4c5d6e7f8091");
        assert_eq!(id_key("order_7"), "order_7");
        assert_eq!(id_key("a.b"), "=612e62", "a dot would split the subject");
        assert_eq!(id_key(""), "=");
        assert_ne!(id_key("=61"), id_key("a"), "an id that looks encoded is encoded itself");
        assert!(id_key("x y*>").bytes().all(|b| b.is_ascii_alphanumeric() || b == b'='));
    }

    #[test]
    fn idempotency_keys_hide_the_token_and_separate_their_parts() {
        let k = dedup_key(Some("secret-token"), None, "7");
        assert_eq!(k.len(), 32);
        assert!(!k.contains("secret"));
        assert_ne!(dedup_key(Some("ab"), Some("c"), "1"), dedup_key(Some("a"), Some("bc"), "1"));
        assert_ne!(dedup_key(None, None, "1"), dedup_key(Some(""), None, "2"));
    }

    /// A key's value names its id and the append that made it, whatever the id holds; a
    /// value of the older form (the id alone) is still read as its id.
    #[test]
    fn a_key_tells_its_id_and_which_append_made_it() {
        let claim = uuid::Uuid::now_v7().to_string();
        for id in ["order-7", "line\nbreak", "ends with\n", ""] {
            assert_eq!(key_parts(&key_value(id, &claim)), (id.to_string(), Some(claim.clone())), "{id:?}");
        }
        assert_eq!(
            key_parts(b"0196a0b2-7c1e-7d2f-9a3b-4c5d6e7f8091"),
            ("0196a0b2-7c1e-7d2f-9a3b-4c5d6e7f8091".into(), None)
        );
        assert_eq!(key_parts(b"a\nnot-a-claim"), ("a\nnot-a-claim".into(), None));
    }
}
