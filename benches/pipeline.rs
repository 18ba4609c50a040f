//! Per-event cost of the plugin pipeline, on the same `infrahub/send.echo.request` events:
//!
//! - `validate`: parse + schema validation alone (the baseline);
//! - `validate+filter`: + the priority filter (Wasm, warm instance);
//! - `validate+filter+handler`: + the echo handler (Wasm, warm), its answer checked
//!   against the manifest and validated like any event;
//! - the same two in strict mode (a fresh instance per call);
//! - `native`: the same filter and handler logic as plain Rust functions;
//! - `plugin_start`: loading a component from the precompiled cache and preparing it
//!   (`InstancePre`), and the first instantiation.
//!
//! Uses the shipped components in `guest-examples/prebuilt/`. Run: `cargo bench --bench pipeline`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use eventyard::config::Config;
use eventyard::event::{Body, Event};
use eventyard::metrics::PluginSamples;
use eventyard::router::pipeline::plugin_event;
use eventyard::schema::Registry;
use eventyard::wasm::plugin::Output;
use eventyard::wasm::{builtin, Plugin, WasmEngine};
use serde_json::{json, Value};
use std::hint::black_box;
use std::sync::Arc;

/// The binary's allocator, so the numbers are the router's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &str = r#"{"meta":{"correlation_id":"c0a8-77f1","request_id":"01HZX3K9V7Q2M8N4P6R5T0W1YA","priority":3},"message":"ping from the benchmark"}"#;

fn manifests(strict: bool) -> Config {
    let toml = format!(
        r#"
        [[plugin]]
        name = "filter"
        component = "builtin:priority-filter"
        world = "filter"
        config = {{ min_priority = 2 }}
        limits = {{ strict = {strict} }}

        [[plugin]]
        name = "echo"
        component = "builtin:echo"
        world = "handler"
        emits = ["infrahub/response/send.echo.request"]
        limits = {{ strict = {strict} }}
        "#
    );
    Config::parse(&toml).expect("bench config")
}

struct Setup {
    registry: Arc<Registry>,
    filter: Plugin,
    handler: Plugin,
}

/// The shipped component, or the file in `EVENTYARD_BENCH_<NAME>` (e.g.
/// `EVENTYARD_BENCH_ECHO=path/to/echo.wasm`): a variant of a guest is measured without
/// rebuilding the benchmark.
fn component(name: &str) -> Vec<u8> {
    let var = format!("EVENTYARD_BENCH_{}", name.to_uppercase().replace('-', "_"));
    match std::env::var_os(&var) {
        Some(path) => std::fs::read(&path).unwrap_or_else(|e| panic!("{var}: {e}")),
        None => builtin::get(name).expect("builtin").to_vec(),
    }
}

fn setup(engine: &WasmEngine, strict: bool) -> Setup {
    let registry = Arc::new(eventyard::app::registry(&Config::default()).expect("catalogue"));
    let samples = Arc::new(PluginSamples::default());
    let mut plugins = manifests(strict).plugins.into_iter().map(|m| {
        let bytes = component(m.component.trim_start_matches("builtin:"));
        Plugin::load(engine, m, &bytes, registry.clone(), samples.clone()).expect("load")
    });
    let filter = plugins.next().unwrap();
    let handler = plugins.next().unwrap();
    Setup { registry, filter, handler }
}

/// What ingestion does with a body: validated in place and kept as text.
fn accept(registry: &Registry, body: &str) -> Event {
    let ty = registry.get("infrahub/send.echo.request").unwrap();
    let (data, priority) = Body::check(ty, body.into()).expect("a valid event");
    Event {
        id: "01J9ZZZZZZZZZZZZZZZZZZZZZZ".into(),
        type_name: ty.name.clone(),
        time: time::OffsetDateTime::UNIX_EPOCH,
        priority,
        source: None,
        data,
        hops: 0,
        keyed: false,
        pin: Default::default(),
    }
}

/// Filter and handler as plain Rust: the baseline a Wasm plugin is measured against.
fn native(registry: &Registry, event: &Event) -> Option<Body> {
    if event.priority < 2 {
        return None;
    }
    // Like the guest, the handler parses the data it is given.
    let data: Value = serde_json::from_str(event.data.text()).unwrap();
    let message = data["message"].as_str().unwrap_or_default();
    let response = json!({
        "meta": {"correlation_id": event.data.correlation_id(), "priority": event.priority},
        "data": {"response": format!("Reply to: {message}")},
        "errors": [], "passed": true, "routing_key": "send.echo.request",
    });
    // Like the router does with a plugin's output: serialised, then checked in place.
    let ty = registry.get("infrahub/response/send.echo.request").unwrap();
    Some(Body::check(ty, response.to_string().into()).expect("valid").0)
}

fn through_plugins(s: &Setup, with_handler: bool) {
    let event = accept(&s.registry, BODY);
    let wit = plugin_event(&event);
    match s.filter.call(&wit) {
        Ok(Output::Verdict(_)) => {}
        _ => panic!("filter failed"),
    }
    if with_handler {
        match s.handler.call(&wit) {
            Ok(Output::Emitted(e)) => assert_eq!(e.len(), 1),
            _ => panic!("handler failed"),
        }
    }
}

fn per_event(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    // `EVENTYARD_BENCH_JIT=1` compiles in memory, so that `EVENTYARD_WASM_PERFMAP=1` can
    // name the guests' functions in `perf report` (cached code is a file mapping).
    let jit = std::env::var_os("EVENTYARD_BENCH_JIT").is_some_and(|v| v == "1");
    let engine = WasmEngine::new(false, (!jit).then(|| cache.path().to_path_buf())).unwrap();
    let warm = setup(&engine, false);
    let strict = setup(&engine, true);
    let mut g = c.benchmark_group("per_event");
    g.throughput(Throughput::Elements(1));
    g.bench_function("validate", |b| b.iter(|| black_box(accept(&warm.registry, black_box(BODY)))));
    g.bench_function("native_filter+handler", |b| {
        b.iter(|| {
            let e = accept(&warm.registry, black_box(BODY));
            black_box(native(&warm.registry, &e))
        })
    });
    g.bench_function("validate+filter/warm", |b| b.iter(|| through_plugins(&warm, false)));
    g.bench_function("validate+filter+handler/warm", |b| b.iter(|| through_plugins(&warm, true)));
    g.bench_function("validate+filter/strict", |b| b.iter(|| through_plugins(&strict, false)));
    g.bench_function("validate+filter+handler/strict", |b| b.iter(|| through_plugins(&strict, true)));
    g.finish();

    let mut g = c.benchmark_group("plugin_start");
    let bytes = builtin::get("echo").unwrap();
    engine.load(bytes).unwrap(); // warm the on-disk cache
    let registry = warm.registry.clone();
    g.bench_function("load_from_cache+instance_pre", |b| {
        b.iter(|| {
            let m = manifests(false).plugins.remove(1);
            black_box(Plugin::load(&engine, m, bytes, registry.clone(), Arc::default()).unwrap())
        })
    });
    g.bench_function("load_from_cache+first_call", |b| {
        let event = plugin_event(&accept(&registry, BODY));
        b.iter(|| {
            let m = manifests(false).plugins.remove(1);
            let p = Plugin::load(&engine, m, bytes, registry.clone(), Arc::default()).unwrap();
            black_box(p.call(&event).is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, per_event);
criterion_main!(benches);
