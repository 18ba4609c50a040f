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
//! | `fan-out` | answers every event with `n` (default 4) copies of itself, routed back to it: `n^hop_limit` calls | `root_budget` |
//!
//! Anything else (or no config) behaves: it emits nothing.

use serde_json::Value;

wit_bindgen::generate!({ path: "../../../wit", world: "handler" });

use eventyard::plugin::{config, emit, log};

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
            _ => Ok(Vec::new()),
        }
    }
}

export!(Hostile);
