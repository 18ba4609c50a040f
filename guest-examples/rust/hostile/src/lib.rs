//! A deliberately hostile handler for the router's sandbox tests. What it does is picked
//! by `mode` in its plugin config:
//!
//! | mode | what it tries | what the router must answer |
//! |---|---|---|
//! | `loop` | spins forever | `deadline` (or `fuel` with a fuel budget) |
//! | `alloc` | grows memory without bound | `memory` |
//! | `recurse` | recurses without bound | `stack_overflow` |
//! | `trap` | panics | `trap` |
//! | `huge-emit` | emits one event far larger than its budget | `emit_budget` |
//! | `emit-flood` | emits more events than its budget | `emit_budget` |
//! | `flood-stdout` | prints megabytes to stdout | handled; output cut at the cap |
//! | `emit-denied` | emits a type its manifest does not list | `emit_denied` |
//! | `emit-invalid` | emits an event that fails its schema | `emit_invalid` |
//! | `log-denied` | logs without the `log` capability | `capability_denied` |
//! | `open-file` | reads `/etc/passwd` | handler error with the sandbox's refusal |
//! | `read-env` | reads the environment and arguments | handler error saying they are empty |
//! | `fail-retryable` | answers a handler error that says a retry may help | retried, then a dead letter |
//! | `echo-back` | answers every event with a new `send.echo.request` (a loop through the router) | `hop_limit` |
//! | `sleep` | sleeps an hour at a time, forever (`std::thread::sleep`: a WASI timer it blocks on) | `deadline`, its worker freed |
//! | `poll` | `poll`s a list of two hour-long timers, then `block`s on one, forever | `deadline`, its worker freed |
//! | `huge-error` | fails with an 80 MiB error message of control characters and forged log lines | `handler_error`, message capped and cleaned |
//! | `log-flood` | writes 1000 log lines of 64 KiB with newlines (needs `log`) | handled; lines capped, the excess counted |
//! | `metrics-denied` | sends a counter with 262144 labels without the `metrics` capability | `capability_denied`, labels never copied |
//! | `metric-bad-label` | a sample with the label `1bad` (needs `metrics`) | handled; sample refused and counted |
//! | `metric-plugin-label` | a sample with the reserved label `plugin` (needs `metrics`) | handled; sample refused and counted |
//! | `metric-bad-name` | a sample named `has spaces` (needs `metrics`) | handled; sample refused and counted |
//! | `metric-quoted-value` | a label value with quotes, a backslash and a newline (needs `metrics`) | handled; value escaped |
//! | `metric-flood` | 5000 series with long label values (needs `metrics`) | handled; series past the cap refused and counted |
//! | `fan-out` | answers every event with `n` (default 4) copies of itself, routed back to it: `n^hop_limit` calls | `root_budget` |
//! | `trap-marked` | panics on events whose data holds `boom`, answers the others with nothing | `trap` for those alone, also in a run |
//! | `batch-short` | answers a run of events (`handle-batch`) with one result too few | the run's events handled again one by one |
//! | `batch-differs` | `handle-batch` emits an event per event, `handle` none | `plugin test --batch` reports the difference (exit 1) |
//! | `emit-report` | sends one `send.echo.request` through `emit.send`; fails with the error it answered, if any | alone: handled; in a run: `handler_error` saying `emit.send` is not available there |
//!
//! It is built against the `batch-handler` world: a run of events comes in one
//! `handle-batch` call, which handles each event as `handle` would.
//!
//! Anything else (or no config) behaves: it emits nothing.

use serde_json::Value;

wit_bindgen::generate!({ path: "../../../wit", world: "batch-handler" });

use eventyard::plugin::{config, emit, log, metrics};

/// Direct WASI imports: monotonic-clock timers and `wasi:io/poll`.
mod probe {
    wit_bindgen::generate!({ path: "wit", world: "hostile:probe/probe", generate_all });
}

struct Hostile;

fn refuse(message: String) -> HandlerError {
    HandlerError { message, retryable: false }
}

/// Recursion that keeps everything in Wasm locals (no shadow stack in linear memory), so
/// what runs out is the Wasm call stack itself.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == u64::MAX {
        return 0;
    }
    recurse(n + 1).rotate_left(1) ^ n
}

impl Guest for Hostile {
    fn handle(_event: &Event) -> Result<Vec<Emitted>, HandlerError> {
        let conf: Value = serde_json::from_str(&config::get()).unwrap_or(Value::Null);
        let echo = |data: String| Emitted { type_: "infrahub/send.echo.request".into(), data };
        match conf["mode"].as_str().unwrap_or("") {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => {
                let n = recurse(std::hint::black_box(0));
                Err(refuse(format!("recursion ended at {n}")))
            }
            "trap" => panic!("hostile plugin panics on purpose"),
            "huge-emit" => {
                let message = "x".repeat(2 << 20);
                Ok(vec![echo(format!(r#"{{"message":"{message}"}}"#))])
            }
            "emit-flood" => {
                for _ in 0..100_000 {
                    if emit::send(&echo(r#"{"message":"flood"}"#.into())).is_err() {
                        break;
                    }
                }
                Ok(Vec::new())
            }
            "flood-stdout" => {
                let line = "y".repeat(1023);
                for _ in 0..4096 {
                    println!("{line}");
                }
                Ok(Vec::new())
            }
            "emit-denied" => {
                let _ = emit::send(&Emitted { type_: "idem/idem-run".into(), data: "{}".into() });
                Ok(Vec::new())
            }
            "emit-invalid" => Ok(vec![echo(r#"{"message": 42}"#.into())]),
            "log-denied" => {
                log::write(log::Level::Info, "this plugin was not granted `log`");
                Ok(Vec::new())
            }
            "open-file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Ok(vec![echo(serde_json::json!({ "message": text }).to_string())]),
                Err(e) => Err(refuse(format!("open /etc/passwd: {e}"))),
            },
            "read-env" => {
                let vars = std::env::vars().count();
                let args = std::env::args().count();
                let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_else(|e| e.to_string());
                Err(refuse(format!("env: {vars} variables, {args} arguments, cwd: {cwd}")))
            }
            "fail-retryable" => Err(HandlerError { message: "upstream busy".into(), retryable: true }),
            "echo-back" => Ok(vec![echo(r#"{"message":"again"}"#.into())]),
            "fan-out" => {
                let n = conf["n"].as_u64().unwrap_or(4) as usize;
                Ok(vec![Emitted { type_: _event.type_(), data: _event.data() }; n])
            }
            // Fails (retryably) until Infrahub's meta.retry_count reaches 2, then answers the
            // echo request with how many retries it took.
            "retry-count" => {
                let data: Value = serde_json::from_str(&_event.data()).unwrap_or(Value::Null);
                let n = data["meta"]["retry_count"].as_u64().unwrap_or(0);
                if n < 2 {
                    return Err(HandlerError { message: format!("not yet (retry_count {n})"), retryable: true });
                }
                let response = serde_json::json!({
                    "meta": { "correlation_id": data["meta"]["correlation_id"] },
                    "data": { "response": format!("answered at retry_count {n}") },
                    "errors": [],
                    "passed": true,
                });
                Ok(vec![Emitted { type_: "infrahub/response/send.echo.request".into(), data: response.to_string() }])
            }
            "sleep" => loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            },
            "poll" => {
                use probe::wasi::clocks::monotonic_clock as clock;
                const HOUR: u64 = 3_600_000_000_000;
                loop {
                    let by_duration = clock::subscribe_duration(HOUR);
                    let by_instant = clock::subscribe_instant(clock::now() + HOUR);
                    let _ = probe::wasi::io::poll::poll(&[&by_duration, &by_instant]);
                    by_duration.block();
                }
            }
            "huge-error" => {
                // A forged router log line first, then control characters up to 80 MiB.
                let mut message = String::from("\r\n2026-01-01T00:00:00Z ERROR eventyard: forged line\n\u{1b}[2J");
                message.extend(std::iter::repeat_n('\u{1}', (80 << 20) - message.len()));
                Err(refuse(message))
            }
            "log-flood" => {
                let line = format!("{}\nERROR eventyard: forged line", "z".repeat(64 << 10));
                for _ in 0..1000 {
                    log::write(log::Level::Info, &line);
                }
                Ok(Vec::new())
            }
            "metrics-denied" => {
                let labels = vec![("k".to_string(), "v".to_string()); 1 << 18];
                metrics::counter("denied", 1.0, &labels);
                Ok(Vec::new())
            }
            "metric-bad-label" => {
                metrics::counter("bad_label", 1.0, &[("1bad".into(), "x".into())]);
                Ok(Vec::new())
            }
            "metric-plugin-label" => {
                metrics::counter("plugin_label", 1.0, &[("plugin".into(), "someone-else".into())]);
                Ok(Vec::new())
            }
            "metric-bad-name" => {
                metrics::gauge("has spaces", 1.0, &[]);
                Ok(Vec::new())
            }
            "metric-quoted-value" => {
                metrics::gauge("quoted", 7.0, &[("said".into(), "say \"hi\" \\ then\nnext line".into())]);
                Ok(Vec::new())
            }
            "metric-flood" => {
                let long = "v".repeat(200);
                for i in 0..5000 {
                    metrics::counter("flood", 1.0, &[("n".into(), format!("{long}{i}"))]);
                }
                Ok(Vec::new())
            }
            "emit-report" => match emit::send(&echo(r#"{"message":"sent"}"#.into())) {
                Ok(()) => Ok(Vec::new()),
                Err(e) => Err(refuse(e)),
            },
            "trap-marked" if _event.data().contains("boom") => panic!("hostile plugin panics on a marked event"),
            _ => Ok(Vec::new()),
        }
    }

    fn handle_batch(events: Vec<BatchEvent>) -> Vec<Result<Vec<Emitted>, HandlerError>> {
        let events: Vec<Event> = events.into_iter().map(|e| e.event).collect();
        let conf: Value = serde_json::from_str(&config::get()).unwrap_or(Value::Null);
        if conf["mode"] == "batch-differs" {
            // `handle` emits nothing in this mode: the two exports disagree.
            let one = || Emitted { type_: "infrahub/send.echo.request".into(), data: r#"{"message":"only in a batch"}"#.into() };
            return events.iter().map(|_| Ok(vec![one()])).collect();
        }
        let mut answers: Vec<_> = events.iter().map(Self::handle).collect();
        if conf["mode"] == "batch-short" {
            answers.pop();
        }
        answers
    }
}

export!(Hostile);
