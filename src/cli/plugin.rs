//! `eventyard plugin test`: runs one plugin on one or more events outside the server, the
//! way a plugin author checks a component before deploying it. The plugin runs in the same
//! sandbox as in the router (limits, capabilities, the emitted events validated against
//! their schemas and the manifest); its log output goes to standard error.
//!
//! `eventyard plugin new`: a ready-to-build plugin project from the templates in
//! `src/cli/templates/` (the WIT is the router's own, embedded).

use crate::config::{Capability, PluginConfig, World};
use crate::event::Event;
use crate::metrics::PluginSamples;
use crate::schema::{Registry, Strictness};
use crate::wasm::bindings::Verdict;
use crate::wasm::host::{CallState, MAX_CALL_EVENTS};
use crate::wasm::plugin::Output;
use crate::wasm::{Plugin, WasmEngine, WasmError};
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// Run a plugin on events and print its verdicts or emitted events (validated), the time,
    /// fuel and peak memory of each call, and its log output (on stderr). Exit 1 when a call
    /// fails or emits something invalid.
    Test {
        /// The component (`.wasm`).
        component: PathBuf,
        /// The events: `{"type": ..., "data": ...}`, a JSON array of those, or NDJSON.
        #[arg(long, value_name = "FILE")]
        event: PathBuf,
        /// The plugin's manifest as TOML: the fields of a `[[plugin]]` table (`world`,
        /// `capabilities`, `emits`, `limits`, `config`). Without it: the world the component
        /// exports, every capability, any catalogue type may be emitted.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// One JSON report per event on stdout.
        #[arg(long)]
        json: bool,
        /// Also hand all the events to `handle-batch` at once (a component built against the
        /// `batch-handler` world), as the router does with a run of waiting events: one report
        /// for the call and one per event, each checked against what `handle` answered for
        /// that event (exit 1 when they differ).
        #[arg(long)]
        batch: bool,
    },
    /// Create a ready-to-build plugin project: the WIT, a tiny filter or handler, a build
    /// script and a sample event, in the directory NAME.
    New {
        /// The plugin's name (and the new directory's).
        name: String,
        #[arg(long, value_enum)]
        lang: Lang,
        #[arg(long, value_enum)]
        world: NewWorld,
        /// Where to create the directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum NewWorld {
    Filter,
    Handler,
    /// A handler that also takes runs of events (`handle-batch`); Rust only.
    BatchHandler,
}

pub fn run(command: PluginCommand, when: super::progress::When) -> anyhow::Result<ExitCode> {
    match command {
        PluginCommand::Test { component, event, config, json, batch } => {
            test(&component, &event, config.as_deref(), Report { json, batch }, when)
        }
        PluginCommand::New { name, lang, world, dir } => new(&name, lang, world, &dir),
    }
}

/// The templates, and the WIT every project is built against.
mod templates {
    pub const WIT: &str = include_str!("../../wit/eventyard.wit");
    pub const README: &str = include_str!("templates/README.md");
    pub const RUST_CARGO: &str = include_str!("templates/rust_Cargo.toml");
    pub const RUST_FILTER: &str = include_str!("templates/rust_filter.rs");
    pub const RUST_HANDLER: &str = include_str!("templates/rust_handler.rs");
    pub const RUST_BATCH_HANDLER: &str = include_str!("templates/rust_batch_handler.rs");
    pub const RUST_BUILD: &str = include_str!("templates/rust_build.sh");
    pub const PYTHON_FILTER: &str = include_str!("templates/python_filter.py");
    pub const PYTHON_HANDLER: &str = include_str!("templates/python_handler.py");
    pub const PYTHON_BUILD: &str = include_str!("templates/python_build.sh");
    pub const JS_FILTER: &str = include_str!("templates/js_filter.js");
    pub const JS_HANDLER: &str = include_str!("templates/js_handler.js");
    pub const JS_PACKAGE: &str = include_str!("templates/js_package.json");
    pub const JS_BUILD_MJS: &str = include_str!("templates/js_build.mjs");
    pub const JS_BUILD: &str = include_str!("templates/js_build.sh");
}

/// The event `sample-event.json` holds: one the templates accept.
const SAMPLE_EVENT: &str = r#"{ "type": "infrahub/send.echo.request", "data": { "message": "hello", "meta": { "priority": 3 } } }
"#;

fn new(name: &str, lang: Lang, world: NewWorld, dir: &Path) -> anyhow::Result<ExitCode> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        bail!("plugin name `{name}`: use lowercase letters, digits and `-`");
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    use templates::*;
    // The world it is built against, and the one its manifest names (a batch handler is
    // configured as a handler).
    let (built_as, world_name, route_key) = match world {
        NewWorld::Filter => ("filter", "filter", "filters"),
        NewWorld::Handler => ("handler", "handler", "handlers"),
        NewWorld::BatchHandler => ("batch-handler", "handler", "handlers"),
    };
    let filter = matches!(world, NewWorld::Filter);
    if matches!(world, NewWorld::BatchHandler) && !matches!(lang, Lang::Rust) {
        bail!("--world batch-handler has a Rust template only; use --world handler (the router then calls it once per event)");
    }
    let files: Vec<(&str, &str)> = match lang {
        Lang::Rust => {
            let code = match world {
                NewWorld::Filter => RUST_FILTER,
                NewWorld::Handler => RUST_HANDLER,
                NewWorld::BatchHandler => RUST_BATCH_HANDLER,
            };
            vec![("Cargo.toml", RUST_CARGO), ("src/lib.rs", code), ("build.sh", RUST_BUILD)]
        }
        Lang::Python => {
            vec![("app.py", if filter { PYTHON_FILTER } else { PYTHON_HANDLER }), ("build.sh", PYTHON_BUILD)]
        }
        Lang::Js => vec![
            ("app.js", if filter { JS_FILTER } else { JS_HANDLER }),
            ("package.json", JS_PACKAGE),
            ("build.mjs", JS_BUILD_MJS),
            ("build.sh", JS_BUILD),
        ],
    };
    let lang_name = match lang {
        Lang::Rust => "Rust",
        Lang::Python => "Python",
        Lang::Js => "JavaScript",
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{world}}", world_name)
            .replace("{{lang}}", lang_name)
            .replace("{{route_key}}", route_key)
    };
    let write = |rel: &str, text: &str| -> anyhow::Result<()> {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("inside the project"))
            .and_then(|_| std::fs::write(&path, text))
            .with_context(|| format!("writing {}", path.display()))
    };
    for (rel, template) in files.iter().chain([("README.md", README)].iter()) {
        write(rel, &fill(template))?;
    }
    write("wit/eventyard.wit", WIT)?;
    write("sample-event.json", SAMPLE_EVENT)?;
    println!("created {} ({lang_name} {built_as}); build it with: bash {}/build.sh", root.display(), root.display());
    Ok(ExitCode::SUCCESS)
}

/// How `plugin test` reports: JSON lines or text; with a `handle-batch` call or without.
#[derive(Clone, Copy)]
struct Report {
    json: bool,
    batch: bool,
}

fn test(
    component: &Path,
    events: &Path,
    config: Option<&Path>,
    report_as: Report,
    when: super::progress::When,
) -> anyhow::Result<ExitCode> {
    let registry =
        Arc::new(Registry::from_catalog(&crate::schema::catalog::Catalog::embedded()?, &Strictness::default())?);
    let bytes = std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let events = read_events(events, &registry)?;
    // Fuel metering on, so that every call's fuel can be reported.
    let engine = WasmEngine::new(true, None)?;
    let plugin = load(&engine, component, &bytes, config, &registry)?;
    if report_as.batch && !plugin.batches() {
        bail!(
            "{}: --batch: the component exports no handle-batch (build it against the batch-handler world)",
            component.display()
        );
    }
    let print = |progress: &super::progress::Progress, report: &Value| match report_as.json {
        true => progress.println(report.to_string()),
        false => progress.println(human(report)),
    };
    let mut failed = false;
    // What `handle` answered for each event, for the comparison with `handle-batch`.
    let mut answered = Vec::with_capacity(events.len());
    let wits: Vec<_> = events.iter().map(crate::router::pipeline::plugin_event).collect();
    let progress = super::progress::Progress::new(when, events.len() as u64, "events");
    for (i, (event, wit)) in events.iter().zip(&wits).enumerate() {
        let call = Cost::start(&plugin);
        let result = plugin.call(wit);
        let mut report = json!({ "event": i + 1, "type": &*event.type_name });
        call.add_to(&plugin, &mut report);
        failed |= !answer(&plugin, result, &mut report);
        answered.push(comparable(&report));
        print(&progress, &report);
        progress.step(event.type_name.to_string());
    }
    if report_as.batch {
        for (run, (wits, answered)) in wits.chunks(MAX_CALL_EVENTS).zip(answered.chunks(MAX_CALL_EVENTS)).enumerate() {
            let first = run * MAX_CALL_EVENTS;
            let call = Cost::start(&plugin);
            let answers = plugin.call_batch_once(wits);
            let mut summary = json!({ "call": "handle-batch", "events": wits.len() });
            call.add_to(&plugin, &mut summary);
            let answers = match answers {
                Ok(answers) => answers,
                Err(f) => {
                    failed = true;
                    summary["failure"] = failure(&f);
                    print(&progress, &summary);
                    continue;
                }
            };
            print(&progress, &summary);
            for (i, (result, by_handle)) in answers.into_iter().zip(answered).enumerate() {
                let event = &events[first + i];
                let mut report = json!({ "call": "handle-batch", "event": first + i + 1, "type": &*event.type_name });
                failed |= !answer(&plugin, result, &mut report);
                if comparable(&report) != *by_handle {
                    failed = true;
                    report["differs_from_handle"] = json!(true);
                }
                print(&progress, &report);
            }
        }
    }
    progress.finish();
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// The time, fuel and peak memory of one call, measured from [`Cost::start`].
struct Cost {
    fuel: u64,
    started: Instant,
}

impl Cost {
    fn start(plugin: &Plugin) -> Self {
        Cost { fuel: plugin.stats.fuel_consumed.load(Ordering::Relaxed), started: Instant::now() }
    }

    fn add_to(self, plugin: &Plugin, report: &mut Value) {
        let micros = self.started.elapsed().as_secs_f64() * 1e6;
        report["time_us"] = json!((micros * 10.0).round() / 10.0);
        report["fuel"] = json!(plugin.stats.fuel_consumed.load(Ordering::Relaxed) - self.fuel);
        report["peak_memory_bytes"] = json!(plugin.stats.peak_memory_bytes.load(Ordering::Relaxed));
    }
}

/// Adds a call's answer for one event to its report; false when it failed.
fn answer(plugin: &Plugin, result: Result<Output, crate::event::Failure>, report: &mut Value) -> bool {
    match result.and_then(|out| outcome(plugin, out)) {
        Ok(out) => {
            report.as_object_mut().expect("object").extend(out);
            true
        }
        Err(f) => {
            report["failure"] = failure(&f);
            false
        }
    }
}

fn failure(f: &crate::event::Failure) -> Value {
    json!({ "kind": f.kind.as_str(), "message": f.message, "retryable": f.retryable })
}

/// What two calls for the same event must agree on: the verdict and what was emitted or
/// replaced, or the kind of failure.
fn comparable(report: &Value) -> Value {
    let keep = ["verdict", "reason", "replacement", "emitted"];
    let mut same: serde_json::Map<String, Value> =
        keep.iter().filter_map(|k| Some((k.to_string(), report.get(*k)?.clone()))).collect();
    if let Some(kind) = report.get("failure").and_then(|f| f.get("kind")) {
        same.insert("failure".into(), kind.clone());
    }
    Value::Object(same)
}

/// The plugin with its manifest (`--config`) or the permissive defaults.
fn load(
    engine: &WasmEngine,
    component: &Path,
    bytes: &[u8],
    config: Option<&Path>,
    registry: &Arc<Registry>,
) -> anyhow::Result<Plugin> {
    let mut table = match config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            text.parse::<toml::Table>().with_context(|| format!("{}: not TOML", path.display()))?
        }
        None => toml::Table::new(),
    };
    let name = component.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin").to_string();
    table.insert("name".into(), name.into());
    table.insert("component".into(), component.display().to_string().into());
    if config.is_none() {
        let all: Vec<toml::Value> = registry.iter().map(|t| t.name.to_string().into()).collect();
        table.insert("emits".into(), all.into());
        let caps = [Capability::Log, Capability::Emit, Capability::Metrics];
        table.insert(
            "capabilities".into(),
            caps.iter().map(|c| toml::Value::from(c.as_str())).collect::<Vec<_>>().into(),
        );
    }
    let worlds = match table.get("world") {
        Some(_) => vec![None],
        None => vec![Some(World::Handler), Some(World::Filter)],
    };
    let mut last = None;
    for world in worlds {
        if let Some(w) = world {
            table.insert("world".into(), w.as_str().into());
        }
        let manifest: PluginConfig = table.clone().try_into().context("the plugin manifest")?;
        match Plugin::load(engine, manifest, bytes, registry.clone(), Arc::new(PluginSamples::default())) {
            Ok(p) => return Ok(p),
            // Not this world: try the other one.
            Err(e @ WasmError::World { .. }) => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("{}: {}", component.display(), last.map_or_else(String::new, |e| e.to_string()))
}

/// The events of `path`: one object, an array, or NDJSON; each validated against its schema.
fn read_events(path: &Path, registry: &Registry) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let items: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(one) => vec![one],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1)))
            .collect::<anyhow::Result<_>>()?,
    };
    let mut events = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("{} (event {})", path.display(), i + 1);
        let Some(type_name) = item["type"].as_str() else { bail!("{at}: expected {{\"type\": ..., \"data\": ...}}") };
        let ty = registry.get(type_name).with_context(|| at.clone())?;
        let data = item["data"].clone();
        if let Err(errors) = ty.validate(&data) {
            let detail: Vec<String> = errors.iter().map(|e| format!("{}: {}", e.instance_path, e.message)).collect();
            bail!("{at}: not a valid {}: {}", ty.name, detail.join("; "));
        }
        events.push(Event {
            id: item["id"].as_str().map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string),
            type_name: ty.name,
            time: time::OffsetDateTime::now_utc(),
            priority: ty.priority_of(&data),
            source: Some("eventyard plugin test".into()),
            data: crate::event::Body::from_value(data),
            hops: 0,
            keyed: false,
            pin: Default::default(),
        });
    }
    Ok(events)
}

/// A successful call as report fields; a filter's rewrite is checked like the router does.
fn outcome(plugin: &Plugin, out: Output) -> Result<serde_json::Map<String, Value>, crate::event::Failure> {
    let emitted = |checked: &crate::wasm::Checked| json!({ "type": checked.type_name, "data": checked.data.value() });
    let mut m = serde_json::Map::new();
    match out {
        Output::Verdict(Verdict::Keep) => {
            m.insert("verdict".into(), json!("keep"));
        }
        Output::Verdict(Verdict::Drop(reason)) => {
            m.insert("verdict".into(), json!("drop"));
            m.insert("reason".into(), json!(reason));
        }
        Output::Verdict(Verdict::Replace(e)) => {
            let checked = plugin.ctx.check_emitted(e, &mut CallState::default())?;
            m.insert("verdict".into(), json!("replace"));
            m.insert("replacement".into(), emitted(&checked));
        }
        Output::Emitted(list) => {
            m.insert("emitted".into(), list.iter().map(emitted).collect());
        }
    }
    Ok(m)
}

/// The report of one call, for people: one line, and one more per emitted event. An
/// event's answer within a `handle-batch` call has no cost of its own (the call's line has).
fn human(r: &Value) -> String {
    let cost = match r.get("time_us") {
        Some(t) => format!(
            " ({t} µs, fuel {}, peak memory {:.1} MiB)",
            r["fuel"],
            r["peak_memory_bytes"].as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
        ),
        None => String::new(),
    };
    let head = match (r.get("call"), r.get("event")) {
        (Some(_), None) => {
            let n = r["events"].as_u64().unwrap_or(0);
            format!("handle-batch, {n} event{} in one call", if n == 1 { "" } else { "s" })
        }
        (Some(_), Some(n)) => format!("  event {n} ({}) in handle-batch", r["type"].as_str().unwrap_or_default()),
        (None, _) => format!("event {} ({})", r["event"], r["type"].as_str().unwrap_or_default()),
    };
    let differs = match r.get("differs_from_handle") {
        Some(_) => " -- DIFFERS from what handle answered",
        None => "",
    };
    if let Some(f) = r.get("failure") {
        let (kind, message) = (f["kind"].as_str().unwrap_or_default(), f["message"].as_str().unwrap_or_default());
        return format!("{head}: FAILED {kind}: {message}{cost}{differs}");
    }
    match (r["verdict"].as_str(), r.get("emitted")) {
        (Some("keep"), _) => format!("{head}: keep{cost}{differs}"),
        (Some("drop"), _) => format!("{head}: drop: {}{cost}{differs}", r["reason"].as_str().unwrap_or_default()),
        (Some(_), _) => format!(
            "{head}: replace with {} (valid) {}{cost}{differs}",
            r["replacement"]["type"], r["replacement"]["data"]
        ),
        (None, None) => format!("{head}: ok{cost}"),
        (None, Some(list)) => {
            let list = list.as_array().map_or(&[][..], Vec::as_slice);
            let mut lines = vec![format!("{head}: ok, {} emitted{cost}{differs}", list.len())];
            let indent = if r.get("call").is_some() { "    " } else { "  " };
            lines.extend(
                list.iter()
                    .map(|e| format!("{indent}{} (valid): {}", e["type"].as_str().unwrap_or_default(), e["data"])),
            );
            lines.join("\n")
        }
    }
}
