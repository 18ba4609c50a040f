//! Property tests (proptest): the parsers that read what producers and catalogue authors
//! write never panic, give every input item exactly one answer, and agree with the
//! reference they must match.
//!
//! - NDJSON and CloudEvents (structured, binary, batch) ingestion, called directly on the
//!   router's own state (`http::cloudevents::post`, no socket) and, with a few cases, over
//!   a real server;
//! - the in-place validator (`schema::tape`): for generated documents and mutated corpus
//!   bodies it reports exactly what the `serde_json::Value` validator reports, for all 43
//!   types; arbitrary text never panics its parser;
//! - the Markdown table parser of the catalogue: arbitrary text never panics it, and a
//!   generated table reads back cell for cell.
//!
//! Each property runs a bounded number of cases here (fast). `scripts/fuzz.sh` runs them for
//! a given time with many more (`PROPTEST_CASES`, `EVENTYARD_FUZZ_SECONDS`); a failure
//! prints proptest's minimal failing input, and proptest keeps its seed under
//! `tests/proptest-regressions/` so that case runs first from then on.

use crate::support::{client, corpus, Server, ADMIN_TOKEN};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use eventyard::config::{Config, DurabilityMode};
use eventyard::http::{AppState, Grant};
use eventyard::schema::catalog::markdown::{self, Block};
use eventyard::schema::catalog::Catalog;
use eventyard::schema::tape::Tape;
use eventyard::schema::{Registry, Rejection, Violation};
use jsonschema::json::Node;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

/// Where proptest keeps the seeds of failures found, replayed first by every property.
const REGRESSIONS: &str = "tests/proptest-regressions/properties.txt";

/// Runs `test` on values of `strategy`: `cases` cases (`PROPTEST_CASES` overrides), then
/// again with fresh seeds until `EVENTYARD_FUZZ_SECONDS` have passed, when that is set.
/// A failure panics with proptest's minimal failing input.
fn check<S>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut config = ProptestConfig {
        source_file: Some(file!()),
        // Next to this file (proptest's default would be a new top-level directory).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        // Shrinking a case that talks to a server is slow; a minute finds a small input.
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    let seconds = std::env::var("EVENTYARD_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut ran = 0u64;
    loop {
        // A new runner draws a new random seed.
        match TestRunner::new(config.clone()).run(&strategy, &test) {
            Ok(()) => ran += u64::from(config.cases),
            Err(TestError::Fail(why, input)) => {
                panic!("property `{name}` failed after {ran} passing cases: {why}\nminimal failing input: {input:#?}")
            }
            Err(TestError::Abort(why)) => panic!("property `{name}` aborted: {why}"),
        }
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("fuzz: property `{name}`: {ran} cases passed");
}

// ---------------------------------------------------------------------------------------
// Shared data: the registry, the corpus, words the schemas use
// ---------------------------------------------------------------------------------------

fn registry() -> &'static Registry {
    static ONE: OnceLock<Registry> = OnceLock::new();
    ONE.get_or_init(|| eventyard::app::registry(&Config::default()).expect("the built-in catalogue compiles"))
}

/// Corpus bodies by type: (type, body).
struct Bodies {
    valid: Vec<(String, Value)>,
    invalid: Vec<(String, Value)>,
}

fn bodies() -> &'static Bodies {
    static ONE: OnceLock<Bodies> = OnceLock::new();
    ONE.get_or_init(|| {
        let (mut valid, mut invalid) = (Vec::new(), Vec::new());
        for case in corpus() {
            valid.extend(case.valid.iter().map(|b| (case.type_name.clone(), b.clone())));
            invalid.extend(case.invalid.iter().map(|(_, b, _)| (case.type_name.clone(), b.clone())));
        }
        Bodies { valid, invalid }
    })
}

/// Property names, enum and const strings of all 43 schemas: generated documents use them
/// so that they reach past the first `additionalProperties` or `enum`.
fn schema_words() -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("properties", Value::Object(p)) => out.extend(p.keys().cloned()),
                        ("const", Value::String(s)) => out.push(s.clone()),
                        ("enum", Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_str).map(String::from)),
                        _ => {}
                    }
                    walk(v, out);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    static ONE: OnceLock<Vec<String>> = OnceLock::new();
    ONE.get_or_init(|| {
        let mut out = Vec::new();
        registry().iter().for_each(|t| walk(&t.schema, &mut out));
        out.sort();
        out.dedup();
        out
    })
    .clone()
}

/// An object key: mostly one the schemas know.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(schema_words()), 1 => "[a-z_]{1,8}", 1 => ".{0,4}"]
}

/// Any JSON value, with the numbers and strings schemas care about (integers written as
/// floats, huge numbers, the schemas' own names).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-10i64..10).prop_map(Value::from),
        (-10i64..10).prop_map(|n| Value::from(n as f64)),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        select(schema_words()).prop_map(Value::String),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Ids are made when a request is sent, so no two events share one (the idempotency window
/// would answer a repeated id as a duplicate).
const ID: &str = "@ID@";

fn fresh_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("fuzz-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn fill_ids(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 32);
    let mut rest = bytes;
    while let Some(at) = rest.windows(ID.len()).position(|w| w == ID.as_bytes()) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(fresh_id().as_bytes());
        rest = &rest[at + ID.len()..];
    }
    out.extend_from_slice(rest);
    out
}

// ---------------------------------------------------------------------------------------
// Ingestion requests and what must come back
// ---------------------------------------------------------------------------------------

/// What one event (or one batch item) must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    Refused,
    /// Arbitrary input: any answer, as long as there is exactly one.
    Either,
}

#[derive(Debug, Clone)]
enum Expected {
    One(Expect),
    /// One result per item, in order, each naming its position under `key`.
    Batch {
        key: &'static str,
        items: Vec<(usize, Expect)>,
    },
}

#[derive(Clone)]
struct Request {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    expected: Expected,
}

/// The body as text, so a minimal failing input reads as what was sent.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("expected", &self.expected)
            .finish()
    }
}

impl Request {
    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            // A value no client could send (a control character) is left out.
            if let Ok(v) = HeaderValue::from_bytes(&fill_ids(v.as_bytes())) {
                map.append(HeaderName::from_static(k), v);
            }
        }
        map
    }
}

/// Checks one answer against what was expected.
fn verify(status: u16, body: &[u8], expected: &Expected) -> Result<(), TestCaseError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        TestCaseError::fail(format!("answer {status} is not JSON ({e}): {}", String::from_utf8_lossy(body)))
    })?;
    prop_assert!(status < 500, "a producer's input got {status}: {v}");
    if status >= 400 {
        prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{status} without an error code: {v}");
    }
    match expected {
        Expected::One(e) => one_result(status, &v, *e),
        Expected::Batch { key, items } => {
            prop_assert_eq!(status, 200, "a batch is answered item by item: {}", v);
            let results = v["results"].as_array().ok_or_else(|| TestCaseError::fail(format!("no results: {v}")))?;
            prop_assert_eq!(results.len(), items.len(), "one result per item: {}", v);
            let accepted = results.iter().filter(|r| r["status"] == 202).count();
            prop_assert_eq!(v["accepted"].as_u64(), Some(accepted as u64), "{}", v);
            prop_assert_eq!(v["rejected"].as_u64(), Some((items.len() - accepted) as u64), "{}", v);
            for (r, (position, e)) in results.iter().zip(items) {
                prop_assert_eq!(r[*key].as_u64(), Some(*position as u64), "results in order: {}", v);
                let status = r["status"].as_u64().ok_or_else(|| TestCaseError::fail(format!("no status: {r}")))?;
                one_result(status as u16, r, *e)?;
            }
            Ok(())
        }
    }
}

fn one_result(status: u16, v: &Value, e: Expect) -> Result<(), TestCaseError> {
    match e {
        Expect::Accepted => {
            prop_assert_eq!(status, 202, "a valid event was refused: {}", v);
            prop_assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "no id: {}", v);
        }
        Expect::Refused => {
            prop_assert!((400..500).contains(&status), "an invalid event got {}: {}", status, v);
            prop_assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "no error code: {}", v);
        }
        Expect::Either => prop_assert!(status == 202 || (400..500).contains(&status), "got {}: {}", status, v),
    }
    Ok(())
}

// --- NDJSON -----------------------------------------------------------------------------

/// One NDJSON line (no newline in it) and what it must get; `None`: a blank line, skipped.
fn ndjson_line() -> impl Strategy<Value = (Vec<u8>, Option<Expect>)> {
    let b = bodies();
    let valid = select(b.valid.clone());
    let invalid = select(b.invalid.clone());
    let line = |v: Value| serde_json::to_vec(&v).expect("serialises");
    prop_oneof![
        4 => (valid.clone(), any::<bool>(), any::<bool>()).prop_map(move |((t, d), with_id, crlf)| {
            let mut l = if with_id { line(json!({"type": t, "data": d, "id": ID})) } else { line(json!({"type": t, "data": d})) };
            if crlf {
                l.push(b'\r');
            }
            (l, Some(Expect::Accepted))
        }),
        1 => invalid.prop_map(move |(t, d)| (line(json!({"type": t, "data": d})), Some(Expect::Refused))),
        1 => (valid.clone(), select(vec!["nope/never", "", "fixinventory/", "infrahub"]))
            .prop_map(move |((_, d), t)| (line(json!({"type": t, "data": d})), Some(Expect::Refused))),
        1 => (valid.clone(), 0..6usize, json_value()).prop_map(move |((t, d), how, other)| {
            // Right words, wrong shape.
            let v = match how {
                0 => json!({"data": d}),
                1 => json!({"type": t}),
                2 => json!({"type": t, "data": d, "extra": other}),
                3 => json!({"type": other, "data": d}),
                4 => json!({"type": t, "data": d, "id": 7}),
                _ => json!([t, d]),
            };
            // `other` may be a string, which makes the `type` case a real (unknown) type name.
            (line(v), Some(Expect::Refused))
        }),
        1 => valid.clone().prop_map(move |(t, d)| {
            let mut l = line(json!({"type": t, "data": d}));
            l.pop(); // no closing brace
            (l, Some(Expect::Refused))
        }),
        1 => prop::collection::vec(any::<u8>().prop_filter("one line", |b| *b != b'\n'), 0..64)
            .prop_map(|l| {
                let blank = l.iter().all(u8::is_ascii_whitespace);
                (l, (!blank).then_some(Expect::Either))
            }),
        1 => select(vec![&b""[..], &b" "[..], &b"\t\r"[..], &b"\r"[..]]).prop_map(|l| (l.to_vec(), None)),
    ]
}

fn ndjson_request() -> impl Strategy<Value = Request> {
    (prop::collection::vec(ndjson_line(), 1..12), any::<bool>()).prop_map(|(lines, trailing_newline)| {
        let mut body = Vec::new();
        let mut items = Vec::new();
        for (i, (l, e)) in lines.iter().enumerate() {
            if i > 0 {
                body.push(b'\n');
            }
            body.extend_from_slice(l);
            if let Some(e) = e {
                items.push((i + 1, *e));
            }
        }
        if trailing_newline {
            body.push(b'\n');
        }
        Request {
            headers: vec![("content-type", "application/x-ndjson".into())],
            body,
            expected: Expected::Batch { key: "line", items },
        }
    })
}

// --- CloudEvents ------------------------------------------------------------------------

const REQUIRED: [&str; 4] = ["specversion", "id", "source", "type"];

/// What is wrong with a generated CloudEvent, if anything.
#[derive(Debug, Clone)]
enum Flaw {
    None,
    Missing(&'static str),
    Empty(&'static str),
    /// A required attribute that is neither a string nor an unsigned integer.
    NotText(&'static str, Value),
    SpecVersion(&'static str),
    Time(&'static str),
    Priority(Value),
    ContentType(&'static str),
    DataBase64,
    UnknownType,
    /// A corpus body its schema refuses.
    InvalidData(String, Value),
    NoData,
}

fn flaw() -> impl Strategy<Value = Flaw> {
    let b = bodies();
    prop_oneof![
        6 => Just(Flaw::None),
        1 => select(REQUIRED.to_vec()).prop_map(Flaw::Missing),
        1 => select(REQUIRED.to_vec()).prop_map(Flaw::Empty),
        1 => (select(REQUIRED.to_vec()), select(vec![json!(true), json!(null), json!([]), json!({}), json!(-1), json!(1.5)]))
            .prop_map(|(k, v)| Flaw::NotText(k, v)),
        1 => select(vec!["0.3", "1", "1.0.0", "v1.0"]).prop_map(Flaw::SpecVersion),
        1 => select(vec!["yesterday", "2026-13-01T00:00:00Z", "2026-11-26 05:00:00", "", "2026-11-26T05:00:00"]).prop_map(Flaw::Time),
        1 => select(vec![json!("0"), json!("6"), json!("high"), json!(0), json!(6), json!(256), json!("")]).prop_map(Flaw::Priority),
        1 => select(vec!["text/plain", "application/xml", "", "json"]).prop_map(Flaw::ContentType),
        1 => Just(Flaw::DataBase64),
        1 => Just(Flaw::UnknownType),
        1 => select(b.invalid.clone()).prop_map(|(t, d)| Flaw::InvalidData(t, d)),
        1 => Just(Flaw::NoData),
    ]
}

/// A structured-mode CloudEvent, and whether it must be accepted.
fn structured_event() -> impl Strategy<Value = (Value, Expect)> {
    let b = bodies();
    (
        select(b.valid.clone()),
        any::<bool>(),
        prop::option::of((1u8..=5, any::<bool>())),
        prop::option::of(select(vec!["application/json", "application/json; charset=utf-8", "application/vnd.x+json"])),
        prop::collection::vec(("x[a-z0-9]{0,6}", json_value()), 0..3),
        flaw(),
    )
        .prop_map(|((type_name, data), with_time, priority, content_type, extensions, flaw)| {
            let mut m = Map::new();
            m.insert("specversion".into(), json!("1.0"));
            m.insert("id".into(), json!(ID));
            m.insert("source".into(), json!("/fuzz"));
            m.insert("type".into(), json!(type_name));
            m.insert("data".into(), data);
            if with_time {
                m.insert("time".into(), json!("2026-11-26T05:00:00.5+01:00"));
            }
            if let Some((p, as_text)) = priority {
                m.insert("priority".into(), if as_text { json!(p.to_string()) } else { json!(p) });
            }
            if let Some(ct) = content_type {
                m.insert("datacontenttype".into(), json!(ct));
            }
            m.extend(extensions);
            let expect = if matches!(flaw, Flaw::None) { Expect::Accepted } else { Expect::Refused };
            match flaw {
                Flaw::None => {}
                Flaw::Missing(k) => drop(m.remove(k)),
                Flaw::Empty(k) => drop(m.insert(k.into(), json!(""))),
                Flaw::NotText(k, v) => drop(m.insert(k.into(), v)),
                Flaw::SpecVersion(v) => drop(m.insert("specversion".into(), json!(v))),
                Flaw::Time(t) => drop(m.insert("time".into(), json!(t))),
                Flaw::Priority(p) => drop(m.insert("priority".into(), p)),
                Flaw::ContentType(ct) => drop(m.insert("datacontenttype".into(), json!(ct))),
                Flaw::DataBase64 => drop(m.insert("data_base64".into(), json!("e30="))),
                Flaw::UnknownType => drop(m.insert("type".into(), json!("nope/never"))),
                Flaw::InvalidData(t, d) => {
                    m.insert("type".into(), json!(t));
                    m.insert("data".into(), d);
                }
                Flaw::NoData => drop(m.remove("data")),
            }
            (Value::Object(m), expect)
        })
}

fn structured_request() -> impl Strategy<Value = Request> {
    structured_event().prop_map(|(event, expect)| Request {
        headers: vec![("content-type", "application/cloudevents+json".into())],
        body: serde_json::to_vec(&event).expect("serialises"),
        expected: Expected::One(expect),
    })
}

fn batch_request() -> impl Strategy<Value = Request> {
    let item = prop_oneof![
        4 => structured_event(),
        1 => json_value().prop_map(|v| (v, Expect::Either)),
    ];
    prop::collection::vec(item, 0..10).prop_map(|items| Request {
        headers: vec![("content-type", "application/cloudevents-batch+json".into())],
        body: serde_json::to_vec(&items.iter().map(|(v, _)| v).collect::<Vec<_>>()).expect("serialises"),
        expected: Expected::Batch { key: "index", items: items.iter().map(|(_, e)| *e).enumerate().collect() },
    })
}

/// A binary-mode CloudEvent: attributes in `ce-*` headers, the data is the body.
fn binary_request() -> impl Strategy<Value = Request> {
    let b = bodies();
    (
        select(b.valid.clone()),
        any::<bool>(),
        prop::option::of(1u8..=5),
        select(vec!["application/json", "application/json; charset=utf-8", "application/vnd.x+json"]),
        flaw(),
    )
        .prop_map(|((type_name, data), with_time, priority, content_type, flaw)| {
            let mut headers: Vec<(&'static str, String)> = vec![
                ("content-type", content_type.into()),
                ("ce-specversion", "1.0".into()),
                ("ce-id", ID.into()),
                ("ce-source", "/fuzz".into()),
                ("ce-type", type_name),
            ];
            if with_time {
                headers.push(("ce-time", "2026-11-26T05:00:00Z".into()));
            }
            if let Some(p) = priority {
                headers.push(("ce-priority", p.to_string()));
            }
            let mut body = serde_json::to_vec(&data).expect("serialises");
            let mut set = |k: &'static str, v: Option<String>| {
                headers.retain(|(h, _)| *h != k);
                if let Some(v) = v {
                    headers.push((k, v));
                }
            };
            let header = |k: &str| match k {
                "specversion" => "ce-specversion",
                "id" => "ce-id",
                "source" => "ce-source",
                _ => "ce-type",
            };
            let mut expect = Expect::Refused;
            match flaw {
                Flaw::Missing(k) => set(header(k), None),
                Flaw::Empty(k) => set(header(k), Some(String::new())),
                Flaw::SpecVersion(v) => set("ce-specversion", Some(v.into())),
                Flaw::Time(t) => set("ce-time", Some(t.into())),
                Flaw::Priority(p) => set("ce-priority", Some(p.as_str().map_or_else(|| p.to_string(), String::from))),
                Flaw::UnknownType => set("ce-type", Some("nope/never".into())),
                Flaw::InvalidData(t, d) => {
                    set("ce-type", Some(t));
                    body = serde_json::to_vec(&d).expect("serialises");
                }
                Flaw::NoData => {
                    body.pop(); // not JSON any more
                }
                Flaw::ContentType(ct) => {
                    set("content-type", Some(ct.into()));
                }
                // No such thing in binary mode.
                Flaw::None | Flaw::NotText(..) | Flaw::DataBase64 => expect = Expect::Accepted,
            }
            Request { headers, body, expected: Expected::One(expect) }
        })
}

/// Arbitrary bytes under any of the media types `POST /v1/events` reads.
fn raw_request() -> impl Strategy<Value = Request> {
    let media = select(vec![
        "application/x-ndjson",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "application/json",
        "text/plain",
    ]);
    let text = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| serde_json::to_vec(&v).expect("serialises")),
        prop::collection::vec(json_value().prop_map(|v| v.to_string()), 0..6).prop_map(|l| l.join("\n").into_bytes()),
    ];
    let ce = prop::collection::vec(
        (select(vec!["ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-priority"]), ".{0,12}"),
        0..6,
    );
    (media, text, ce).prop_map(|(media, body, ce)| {
        let mut headers: Vec<(&'static str, String)> = vec![("content-type", media.into())];
        headers.extend(ce);
        // `ce-specversion` makes any body a binary-mode event, refused unless JSON.
        let binary = headers.iter().any(|(k, _)| *k == "ce-specversion");
        let expected = if media == "application/x-ndjson" && !binary {
            // Only the non-blank lines are answered, each once.
            let items = body
                .split(|&b| b == b'\n')
                .enumerate()
                .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
                .map(|(i, _)| (i + 1, Expect::Either))
                .collect();
            Expected::Batch { key: "line", items }
        } else {
            Expected::One(Expect::Either)
        };
        Request { headers, body, expected }
    })
}

/// A request to `POST /v1/events` whose batches, when it is one, are refused or answered.
fn any_request() -> impl Strategy<Value = Request> {
    prop_oneof![ndjson_request(), batch_request(), structured_request(), binary_request(), raw_request()]
}

/// With `Expected::One` a batch-shaped answer is not expected; raw CloudEvents batches may
/// still be answered either way.
fn verify_any(status: u16, body: &[u8], expected: &Expected) -> Result<(), TestCaseError> {
    match expected {
        Expected::One(Expect::Either) if status == 200 => {
            let v: Value = serde_json::from_slice(body).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(v["results"].is_array(), "200 without results: {}", v);
            Ok(())
        }
        _ => verify(status, body, expected),
    }
}

// --- Where requests go ------------------------------------------------------------------

/// The router's own state, without a socket: requests go straight to the handler that parses
/// them (`http::cloudevents::post`, which also dispatches NDJSON).
struct InProcess {
    runtime: tokio::runtime::Runtime,
    state: Arc<AppState>,
    _dir: tempfile::TempDir,
}

fn in_process() -> &'static InProcess {
    static ONE: OnceLock<InProcess> = OnceLock::new();
    ONE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::default();
        config.data_dir = dir.path().join("data");
        config.store.dir = Some(dir.path().join("log"));
        // Thousands of cases: the log's syncs are not what is tested here.
        config.store.durability = DurabilityMode::Off;
        config.auth.admin_token = Some(ADMIN_TOKEN.into());
        config.workflows.iter_mut().for_each(|w| w.schedule = None);
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let state = runtime.block_on(async { eventyard::app::build(&config).await }).expect("router state").http;
        InProcess { runtime, state, _dir: dir }
    })
}

fn post_in_process(req: &Request) -> (u16, Vec<u8>) {
    let p = in_process();
    p.runtime.block_on(async {
        let res = eventyard::http::cloudevents::post(
            State(p.state.clone()),
            Grant::default(),
            req.header_map(),
            Body::from(fill_ids(&req.body)),
        )
        .await;
        let status = res.status().as_u16();
        (status, axum::body::to_bytes(res.into_body(), usize::MAX).await.expect("a whole answer").to_vec())
    })
}

#[test]
fn ndjson_every_line_gets_one_result_and_valid_lines_are_accepted() {
    check("ndjson", 128, ndjson_request(), |req| {
        let (status, body) = post_in_process(&req);
        verify(status, &body, &req.expected)
    });
}

#[test]
fn cloudevents_structured_documents_are_accepted_exactly_when_valid() {
    check("cloudevents-structured", 128, structured_request(), |req| {
        let (status, body) = post_in_process(&req);
        verify(status, &body, &req.expected)
    });
}

#[test]
fn cloudevents_binary_events_are_accepted_exactly_when_valid() {
    check("cloudevents-binary", 128, binary_request(), |req| {
        let (status, body) = post_in_process(&req);
        verify(status, &body, &req.expected)
    });
}

#[test]
fn cloudevents_batches_answer_every_item_once() {
    check("cloudevents-batch", 128, batch_request(), |req| {
        let (status, body) = post_in_process(&req);
        verify(status, &body, &req.expected)
    });
}

#[test]
fn arbitrary_bodies_never_panic_the_ingestion_parsers() {
    check("ingest-raw", 256, raw_request(), |req| {
        let (status, body) = post_in_process(&req);
        verify_any(status, &body, &req.expected)
    });
}

#[test]
fn ingestion_properties_hold_over_a_real_server() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start());
    let http = client();
    let url = server.url("/v1/events");
    check("ingest-server", 24, any_request(), |req| {
        let (status, body) = runtime.block_on(async {
            let res = http.post(&url).headers(req.header_map()).body(fill_ids(&req.body)).send().await.unwrap();
            (res.status().as_u16(), res.bytes().await.unwrap().to_vec())
        });
        verify_any(status, &body, &req.expected)
    });
}

// ---------------------------------------------------------------------------------------
// The in-place validator
// ---------------------------------------------------------------------------------------

/// One step in a path into a JSON value.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn paths(v: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                here.push(Step::Key(k.clone()));
                paths(v, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                here.push(Step::At(i));
                paths(v, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at_mut<'v>(v: &'v mut Value, path: &[Step]) -> &'v mut Value {
    path.iter().fold(v, |v, s| match s {
        Step::Key(k) => &mut v[k.as_str()],
        Step::At(i) => &mut v[*i],
    })
}

/// An edit of a corpus body.
#[derive(Debug, Clone)]
enum Edit {
    Remove(Index),
    Replace(Index, Value),
    Insert(Index, String, Value),
    /// An integer written as a float, or an integral float as an integer.
    Renumber(Index),
    /// The same member name twice in one object (the text has both; a tree keeps the last).
    Duplicate(Index, Value),
}

/// Marks a member that is written out under the name after the marker, before the real one.
const DUPLICATE: char = '\u{1}';

fn apply(doc: &mut Value, edit: &Edit) {
    let mut all: Vec<Vec<Step>> = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    let pick = |i: &Index| -> Vec<Step> { i.get(&all).clone() };
    match edit {
        Edit::Remove(i) => {
            let path = pick(i);
            if let Some((last, parent)) = path.split_last() {
                match (at_mut(doc, parent), last) {
                    (Value::Object(m), Step::Key(k)) => drop(m.remove(k)),
                    (Value::Array(a), Step::At(i)) => drop(a.remove(*i)),
                    _ => {}
                }
            }
        }
        Edit::Replace(i, v) => *at_mut(doc, &pick(i)) = v.clone(),
        Edit::Insert(i, k, v) => match at_mut(doc, &pick(i)) {
            Value::Object(m) => drop(m.insert(k.clone(), v.clone())),
            Value::Array(a) => a.push(v.clone()),
            other => *other = Value::Object(Map::from_iter([(k.clone(), v.clone())])),
        },
        Edit::Renumber(i) => {
            let at = at_mut(doc, &pick(i));
            if let Some(n) = at.as_i64() {
                *at = json!(n as f64);
            } else if let Some(f) = at.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e15) {
                *at = json!(f as i64);
            }
        }
        Edit::Duplicate(i, v) => {
            if let Value::Object(m) = at_mut(doc, &pick(i)) {
                if let Some(k) = m.keys().next().cloned() {
                    m.insert(format!("{DUPLICATE}{k}"), v.clone());
                }
            }
        }
    }
}

/// The text of `doc`, with each duplicate marker turned into its member name (the marker
/// sorts first, so the shadowed member comes before the one a tree keeps).
fn render(doc: &Value, pretty: bool) -> String {
    let text = if pretty { serde_json::to_string_pretty(doc) } else { serde_json::to_string(doc) };
    text.expect("serialises").replace(&format!("\"\\u{:04}", DUPLICATE as u32), "\"")
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<Index>().prop_map(Edit::Remove),
        (any::<Index>(), json_value()).prop_map(|(i, v)| Edit::Replace(i, v)),
        (any::<Index>(), key(), json_value()).prop_map(|(i, k, v)| Edit::Insert(i, k, v)),
        any::<Index>().prop_map(Edit::Renumber),
        (any::<Index>(), json_value()).prop_map(|(i, v)| Edit::Duplicate(i, v)),
    ]
}

/// A JSON text: a corpus body after a few edits, or a generated document.
fn document() -> impl Strategy<Value = String> {
    let b = bodies();
    let all: Vec<Value> = b.valid.iter().chain(&b.invalid).map(|(_, v)| v.clone()).collect();
    prop_oneof![
        3 => (select(all), prop::collection::vec(edit(), 1..5), any::<bool>()).prop_map(|(mut doc, edits, pretty)| {
            edits.iter().for_each(|e| apply(&mut doc, e));
            render(&doc, pretty)
        }),
        1 => (json_value(), prop::collection::vec(edit(), 0..3)).prop_map(|(mut doc, edits)| {
            edits.iter().for_each(|e| apply(&mut doc, e));
            render(&doc, false)
        }),
    ]
}

type Report = Vec<(String, String, String)>;

fn report(violations: &[Violation]) -> Report {
    let mut r: Report = violations
        .iter()
        .map(|v| (v.instance_path.clone(), v.schema_path.clone(), unordered_names(&v.message)))
        .collect();
    r.sort();
    r
}

/// The in-place validator names unexpected members in the order the document has them, the
/// tree one in name order (documented on `EventType::check`): the list is compared as a set.
fn unordered_names(message: &str) -> String {
    match message.strip_prefix("Additional properties are not allowed (").and_then(|m| m.rsplit_once(" were")) {
        Some((names, rest)) => {
            let mut names: Vec<&str> = names.split(", ").collect();
            names.sort();
            format!("Additional properties are not allowed ({} were{rest}", names.join(", "))
        }
        None => message.to_string(),
    }
}

#[test]
fn tape_and_tree_validators_agree_for_every_type() {
    check("tape-validator", 96, document(), |text| {
        let tree: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("not JSON: {e}")))?;
        for ty in registry().iter() {
            let by_tree = ty.validate(&tree).map_err(|v| report(&v));
            let in_place = match ty.check(&text) {
                Ok(_) => Ok(()),
                Err(Rejection::Invalid(v)) => Err(report(&v)),
                Err(Rejection::NotJson(e)) => {
                    return Err(TestCaseError::fail(format!("{}: not JSON in place: {e}", ty.name)))
                }
                // The depth cap is the log's (router::body), stricter than the tree's parser.
                Err(Rejection::TooDeep { .. }) => continue,
            };
            prop_assert_eq!(&in_place, &by_tree, "{}: the two validators disagree on {}", ty.name, text);
        }
        Ok(())
    });
}

/// Pieces of JSON and near-JSON (lone surrogates, huge numbers, bad escapes, a BOM).
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    " ",
    "\n",
    "\"a\"",
    "\"\\u00e9\"",
    "\"\\ud800\"",
    "\"\\ud83d\\ude00\"",
    "\"\\\"\"",
    "\"\\x\"",
    "0",
    "-0",
    "1.5",
    "1e400",
    "-1e-400",
    "18446744073709551616",
    "-9223372036854775809",
    "01",
    "1.",
    "true",
    "null",
    "nul",
    "\"",
    "\u{feff}",
    "\t",
    "\"é\"",
    "\"\u{0}\"",
    "\\",
];

fn json_ish_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,64}",
        prop::collection::vec(select(TOKENS), 0..48).prop_map(|t| t.concat()),
        (json_value(), any::<Index>(), select(TOKENS)).prop_map(|(v, i, t)| {
            let mut s = v.to_string();
            let at = i.index(s.len() + 1);
            if s.is_char_boundary(at) {
                s.insert_str(at, t);
            }
            s
        }),
        (1usize..400).prop_map(|n| "[".repeat(n) + &"]".repeat(n)),
        (1usize..400).prop_map(|n| "{\"a\":".repeat(n) + "1" + &"}".repeat(n)),
    ]
}

#[test]
fn tape_parser_reads_arbitrary_text_like_serde_json() {
    check("tape-parser", 256, json_ish_text(), |text| {
        let tree = serde_json::from_str::<Value>(&text);
        match (Tape::parse(&text), tree) {
            (Ok(tape), Ok(tree)) => prop_assert_eq!(tape.root().to_value().into_owned(), tree),
            (Err(_), Err(_)) => {}
            (tape, tree) => {
                return Err(TestCaseError::fail(format!(
                    "in place {:?}, tree {:?}",
                    tape.map(|_| "ok").map_err(|e| e.to_string()),
                    tree.map(|_| "ok").map_err(|e| e.to_string())
                )))
            }
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------
// The Markdown tables of the catalogue
// ---------------------------------------------------------------------------------------

/// Pieces of the Markdown the catalogue sources use.
const MARKDOWN: &[&str] = &[
    "|",
    "\\|",
    "**",
    "---",
    "```",
    "```json",
    "#",
    "## ",
    "#### Event ",
    ":",
    " ",
    "a",
    "é",
    "-",
    "Key",
    "Description",
    "Type",
    "Default Value",
    "Event Name",
    "Event Description",
    "Field",
    "N/A",
    "None",
    "string",
    "array(",
    ")",
    "integer(1..5)",
    "enum(a, b)",
    "|---|---|",
    "{",
    "}",
    "\"",
    ".",
    ",",
    "**Priority**: ",
    "3",
    "event-name",
    "data",
    "meta",
    "| Key | Description | Type | Default Value |",
    "|---|---|---|---|",
    "| Event Name | Event Description |",
    "| Field | Type | Description |",
    "{\"tags\": {\"ref\": \"x\"}}",
];

fn markdown_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        4 => prop::collection::vec(select(MARKDOWN), 0..8).prop_map(|p| p.concat()),
        1 => "[^\n]{0,24}",
    ];
    let lines = prop::collection::vec(line, 0..40).prop_map(|l| l.join("\n"));
    // A key table whose one key is deeply dotted, or whose type deeply nested.
    let deep = (1usize..3000, any::<bool>()).prop_map(|(n, by_type)| {
        let (key, ty) = if by_type {
            ("a".to_string(), format!("{}string{}", "array(".repeat(n), ")".repeat(n)))
        } else {
            (vec!["a"; n + 1].join("."), "string".to_string())
        };
        format!(
            "## Meta\n| Key | Description | Type | Default Value |\n|---|---|---|---|\n| {key} | d | {ty} | None |\n"
        )
    });
    prop_oneof![8 => lines, 1 => deep]
}

#[test]
fn markdown_parsers_never_panic_on_arbitrary_text() {
    let origin = markdown::Origin { path: Path::new("fuzz.md") };
    check("markdown", 256, markdown_text(), |text| {
        let lines = text.lines().count();
        if let Err(e) = markdown::parse(&text, &origin) {
            let eventyard::schema::catalog::CatalogError::Parse { line, .. } = e else {
                return Err(TestCaseError::fail(format!("not a parse error: {e}")));
            };
            prop_assert!((1..=lines + 1).contains(&line), "line {} of {}: {}", line, lines, e);
        }
        // And each format's parser after a front matter that names it.
        for format in ["event-table", "key-table", "body-examples"] {
            let source = format!("---\nfamily: fuzz\nformat: {format}\n---\n{text}");
            if let Ok(catalog) = Catalog::from_sources([(PathBuf::from("fuzz.md"), source)]) {
                for def in &catalog.events {
                    prop_assert!(def.schema.is_object(), "{}", def.type_name());
                }
            }
        }
        Ok(())
    });
}

/// One table cell as written and as it must read back: plain text, or `**bold**` (read back
/// without the stars).
fn cell() -> impl Strategy<Value = (String, String)> {
    let text = prop::collection::vec(
        prop_oneof![
            2 => select(vec!['|', '\\', '*', '-', ' ', ':', '#', '`', 'é', '\t', 'a', 'Z']),
            1 => any::<char>().prop_filter("one line", |c| *c != '\n' && *c != '\r'),
        ],
        0..10,
    )
    .prop_map(|c| c.into_iter().collect::<String>().trim().to_string());
    (text, any::<bool>()).prop_map(|(t, bold)| {
        let written = if bold { format!("**{t}**") } else { t.clone() };
        (written, t)
    })
}

/// Whether `| t |` would read back as `t` at all: a plain cell that is itself `**...**`
/// is read as bold.
fn plain_reads_back(written: &str, expected: &str) -> bool {
    written != expected || !(written.len() >= 4 && written.starts_with("**") && written.ends_with("**"))
}

fn table() -> impl Strategy<Value = (Vec<(String, String)>, Vec<Vec<(String, String)>>)> {
    (1usize..5)
        .prop_flat_map(|columns| {
            (
                prop::collection::vec(cell(), columns),
                prop::collection::vec(prop::collection::vec(cell(), columns), 0..6),
            )
        })
        .prop_filter("cells that read back", |(header, rows)| {
            header.iter().chain(rows.iter().flatten()).all(|(w, e)| plain_reads_back(w, e))
        })
}

fn row(cells: &[(String, String)]) -> String {
    let cells: Vec<String> = cells.iter().map(|(w, _)| w.replace('|', "\\|")).collect();
    format!("| {} |", cells.join(" | "))
}

#[test]
fn a_generated_markdown_table_reads_back_cell_for_cell() {
    let origin = markdown::Origin { path: Path::new("table.md") };
    check("markdown-table", 256, table(), |(header, rows)| {
        let mut text = format!("# Title\n\nSome prose.\n\n{}\n", row(&header));
        text.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        for r in &rows {
            text.push_str(&row(r));
            text.push('\n');
        }
        text.push_str("\nAfter the table.\n");
        let doc = markdown::parse(&text, &origin).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let tables: Vec<_> =
            doc.blocks.iter().filter_map(|b| if let Block::Table(t) = b { Some(t) } else { None }).collect();
        prop_assert_eq!(tables.len(), 1, "{}", text);
        let t = tables[0];
        let expected = |cells: &[(String, String)]| cells.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>();
        prop_assert_eq!(&t.header, &expected(&header), "{}", text);
        prop_assert_eq!(t.line, 5);
        prop_assert_eq!(t.rows.len(), rows.len(), "{}", text);
        for (i, (got, want)) in t.rows.iter().zip(&rows).enumerate() {
            prop_assert_eq!(&got.cells, &expected(want), "{}", text);
            prop_assert_eq!(got.line, 7 + i);
        }
        Ok(())
    });
}
