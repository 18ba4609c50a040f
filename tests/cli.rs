//! `eventyard validate` and friends, as a user runs them.

use crate::support::{eventyard, repo, text};
use std::process::{Command, Stdio};

const ECHO: &str = r#"{"meta":{"priority":5},"message":"ping"}"#;

#[test]
fn validate_prints_every_error_with_its_path() {
    let bad = r#"{"meta":{"priority":9},"message":1,"extra":true}"#;
    let out = eventyard(&["validate", "infrahub/send.echo.request", "-"], &repo(), Some(bad.as_bytes()));
    assert_eq!(out.status.code(), Some(1));
    let s = text(&out.stdout);
    assert!(s.starts_with("invalid: infrahub/send.echo.request (3 error(s))"), "{s}");
    assert!(s.contains("  /meta/priority: 9 is greater than the maximum of 5"), "{s}");
    assert!(s.contains("  /message: 1 is not of type \"string\""), "{s}");
    assert!(s.contains("  (root): Additional properties are not allowed ('extra' was unexpected)"), "{s}");
}

#[test]
fn validate_unknown_type_exits_2_with_close_names() {
    let out = eventyard(&["validate", "infrahub/send.echo.reqest", "-"], &repo(), Some(ECHO.as_bytes()));
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains("unknown event type `infrahub/send.echo.reqest`"), "{e}");
    assert!(e.contains("close names: infrahub/send.echo.request"), "{e}");
    // A bare event name finds its family.
    let out = eventyard(&["validate", "cleanup_plan", "-"], &repo(), Some(b"{}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("fixinventory/cleanup_plan"));
}

#[test]
fn validate_reports_unreadable_and_malformed_input() {
    let out = eventyard(&["validate", "infrahub/send.echo.request", "/nonexistent/x.json"], &repo(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("reading /nonexistent/x.json"));
    let out = eventyard(&["validate", "infrahub/send.echo.request", "-"], &repo(), Some(b"{\n  \"message\": ]"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not JSON at line 2, column 14"), "{}", text(&out.stderr));
}

#[test]
fn validate_accepts_the_resoto_alias_and_can_relax_unknown_fields() {
    let ev = r#"{"kind":"event","message_type":"collect","data":{},"extra":1}"#;
    let strict = eventyard(&["validate", "resoto/collect", "-"], &repo(), Some(ev.as_bytes()));
    assert_eq!(strict.status.code(), Some(1));
    let open = eventyard(&["validate", "resoto/collect", "-", "--allow-unknown-fields"], &repo(), Some(ev.as_bytes()));
    assert_eq!(open.status.code(), Some(0), "{}", text(&open.stdout));
    assert_eq!(text(&open.stdout).trim(), "valid: fixinventory/collect");
}

#[test]
fn schemas_list_names_all_43_types() {
    let out = eventyard(&["schemas", "list"], &repo(), None);
    assert!(out.status.success());
    let s = text(&out.stdout);
    assert_eq!(s.lines().count(), 43);
    assert!(s.lines().any(|l| l == "infrahub/response/git.file.get"));
}

#[test]
fn serve_refuses_a_config_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\n[ingest]\nmax_body_byte = 10\n").unwrap();
    let out = eventyard(&["serve", "--config", cfg.to_str().unwrap()], &repo(), None);
    assert_eq!(out.status.code(), Some(2));
    let e = text(&out.stderr);
    assert!(e.contains("unknown field `max_body_byte`"), "{e}");
    std::fs::write(&cfg, "[subscribers]\nbuffer = 0\n").unwrap();
    let out = eventyard(&["serve", "--config", cfg.to_str().unwrap()], &repo(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("subscribers.buffer: must be greater than 0"));
}

/// `eventyard plugin test COMPONENT --event FILE [extra]` with `events` written to a file.
fn plugin_test(component: &str, events: &str, extra: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, events).unwrap();
    let mut args = vec!["plugin", "test", component, "--event", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    eventyard(&args, &repo(), None)
}

#[test]
fn plugin_test_runs_a_component_on_events_and_reports_output_time_fuel_and_memory() {
    let echo = repo().join("guest-examples/prebuilt/echo.wasm");
    let events = "{\"type\":\"infrahub/send.echo.request\",\"data\":{\"message\":\"hi\",\"meta\":{\"correlation_id\":\"c-1\"}}}\n\
                  {\"type\":\"infrahub/send.echo.request\",\"data\":{\"message\":\"again\"}}\n";
    let out = plugin_test(echo.to_str().unwrap(), events, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("event 1 (infrahub/send.echo.request): ok, 1 emitted ("), "{s}");
    assert!(
        s.contains("infrahub/response/send.echo.request (valid): {\"data\":{\"response\":\"Reply to: hi\"}"),
        "{s}"
    );
    assert!(s.contains("Reply to: again"), "{s}");

    // --json: one report per event, with the costs.
    let out = plugin_test(echo.to_str().unwrap(), events, &["--json"]);
    let reports: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert!(r["time_us"].as_f64().unwrap() > 0.0 && r["fuel"].as_u64().unwrap() > 0, "{r}");
        assert!(r["peak_memory_bytes"].as_u64().unwrap() > 0, "{r}");
    }
    assert_eq!(reports[0]["emitted"][0]["data"]["meta"]["correlation_id"], "c-1");

    // The plugin's log output goes to stderr (every capability is granted by default).
    let plan = repo().join("guest-examples/prebuilt/cleanup_plan.wasm");
    let ev = r#"{"type":"fixinventory/cleanup_plan","data":{"kind":"action","message_type":"cleanup_plan","data":{"resources":[{"id":"i-1","kind":"vm","age_days":90,"tags":{}}]}}}"#;
    let out = plugin_test(plan.to_str().unwrap(), ev, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("cleanup plan: 1 of 1 resources to clean up"), "{}", text(&out.stderr));
}

#[test]
fn plugin_test_fails_on_traps_and_invalid_output_and_refuses_bad_input() {
    let hostile = crate::support::guest("hostile");
    let event = r#"{"type":"infrahub/send.echo.request","data":{"message":"hi"}}"#;
    let dir = tempfile::tempdir().unwrap();
    let manifest = |mode: &str| {
        let path = dir.path().join(format!("{mode}.toml"));
        std::fs::write(&path, format!("world = \"handler\"\nemits = [\"infrahub/response/send.echo.request\", \"infrahub/send.echo.request\"]\nconfig = {{ mode = \"{mode}\" }}\n")).unwrap();
        path.to_str().unwrap().to_string()
    };
    let out = plugin_test(&hostile, event, &["--config", &manifest("trap")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("FAILED trap: wasm trap"), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains("hostile plugin panics on purpose"), "the guest's stderr is shown");
    let out = plugin_test(&hostile, event, &["--config", &manifest("emit-invalid"), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(report["failure"]["kind"], "emit_invalid", "{report}");

    // Bad input is a usage error (exit 2) that says what is wrong.
    let out = plugin_test(&hostile, r#"{"type":"infrahub/send.echo.request","data":{"message":1}}"#, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a valid infrahub/send.echo.request: /message"), "{}", text(&out.stderr));
    let out = plugin_test(repo().join("README.md").to_str().unwrap(), event, &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// `eventyard plugin new NAME --lang LANG --world WORLD` makes a project whose `build.sh`
/// builds a component that `eventyard plugin test` runs on its sample event, answering
/// `expect`. One test per language, so that the slow builds (componentize-js above all) run
/// beside each other instead of one after the other.
fn scaffold_builds_and_passes(name: &str, lang: &str, world: &str, expect: &str) {
    scaffold_builds_and_passes_with(name, lang, world, &[], expect)
}

/// [`scaffold_builds_and_passes`] with `extra` arguments to `plugin test`.
fn scaffold_builds_and_passes_with(name: &str, lang: &str, world: &str, extra: &[&str], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // The toolchains the examples' build scripts installed, so the projects build offline-fast.
    crate::support::lang_guest("python", "idem-state-filter");
    let path = format!(
        "{}:{}",
        repo().join("guest-examples/python/target/venv/bin").display(),
        std::env::var("PATH").unwrap()
    );
    let out = eventyard(&["plugin", "new", name, "--lang", lang, "--world", world, "--dir", d], &repo(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let project = dir.path().join(name);
    for f in ["build.sh", "README.md", "sample-event.json", "wit/eventyard.wit"] {
        assert!(project.join(f).exists(), "{name}: {f} missing");
    }
    let built = Command::new("bash")
        .arg(project.join("build.sh"))
        .env("CARGO_TARGET_DIR", repo().join("guest-examples/rust/target"))
        .env("PATH", &path)
        .output()
        .unwrap();
    assert!(built.status.success(), "{name} does not build:\n{}{}", text(&built.stdout), text(&built.stderr));
    let wasm = project.join(format!("{name}.wasm"));
    let sample = project.join("sample-event.json");
    let mut args = vec!["plugin", "test", wasm.to_str().unwrap(), "--event", sample.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = eventyard(&args, &repo(), None);
    assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains(expect), "{name}: {}", text(&out.stdout));
    if world != "filter" {
        assert!(text(&out.stderr).contains(&format!("{name} got infrahub/send.echo.request")), "{name} logs");
    }
}

#[test]
fn plugin_new_scaffolds_a_rust_handler_that_builds_and_passes_plugin_test() {
    scaffold_builds_and_passes("rust-handler", "rust", "handler", "ok, 0 emitted");
}

/// A batch handler (Rust only): `plugin test --batch` calls its `handle-batch` and finds it
/// answering like `handle`; another language is refused with what to use instead.
#[test]
fn plugin_new_scaffolds_a_rust_batch_handler_that_builds_and_passes_plugin_test_batch() {
    scaffold_builds_and_passes_with(
        "rust-batch",
        "rust",
        "batch-handler",
        &["--batch"],
        "handle-batch, 1 event in one call: ok (",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = eventyard(
        &[
            "plugin",
            "new",
            "py-batch",
            "--lang",
            "python",
            "--world",
            "batch-handler",
            "--dir",
            dir.path().to_str().unwrap(),
        ],
        &repo(),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--world batch-handler has a Rust template only"), "{}", text(&out.stderr));
    assert!(!dir.path().join("py-batch").exists(), "nothing is created");
}

#[test]
fn plugin_new_scaffolds_a_python_filter_that_builds_and_passes_plugin_test() {
    scaffold_builds_and_passes("py-filter", "python", "filter", ": keep (");
}

#[test]
fn plugin_new_scaffolds_a_javascript_handler_that_builds_and_passes_plugin_test() {
    scaffold_builds_and_passes("js-handler", "js", "handler", "ok, 0 emitted");
}

/// An existing directory, or a name that is not a crate/package name, is refused.
#[test]
fn plugin_new_refuses_an_existing_directory_and_a_bad_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let new = |name: &str, lang: &str, world: &str| {
        eventyard(&["plugin", "new", name, "--lang", lang, "--world", world, "--dir", d], &repo(), None)
    };
    assert_eq!(new("rust-handler", "rust", "handler").status.code(), Some(0));
    let out = new("rust-handler", "rust", "filter");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists"));
    assert_eq!(new("Bad Name", "js", "filter").status.code(), Some(2));
}

#[test]
fn a_perf_map_names_plugin_code_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    std::fs::write(&events, "{\"type\":\"infrahub/send.echo.request\",\"data\":{\"message\":\"hi\"}}\n").unwrap();
    let echo = repo().join("guest-examples/prebuilt/echo.wasm");
    let run = |perfmap: &str| {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_eventyard"))
            .args(["plugin", "test", echo.to_str().unwrap(), "--event", events.to_str().unwrap()])
            .env("EVENTYARD_WASM_PERFMAP", perfmap)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", child.id()));
        assert!(child.wait_with_output().unwrap().status.success());
        let text = std::fs::read_to_string(&map).ok();
        let _ = std::fs::remove_file(&map);
        text
    };
    let map = run("1").expect("a perf map is written");
    assert!(map.lines().any(|l| l.contains("wasm")), "plugin functions are named: {map}");
    assert_eq!(run("0"), None, "no map unless asked");
}

/// `--batch` hands all the events to `handle-batch` in one call, as the router does with a
/// run of waiting events, and checks each answer against what `handle` answered; a call that
/// fails as a whole, or answers that differ, fail the test; a component without the export is
/// refused.
#[test]
fn plugin_test_batch_calls_handle_batch_once_and_compares_it_with_handle() {
    let echo = repo().join("guest-examples/prebuilt/echo.wasm");
    let echo = echo.to_str().unwrap();
    let events: String = (1..=3)
        .map(|i| format!("{{\"type\":\"infrahub/send.echo.request\",\"data\":{{\"message\":\"m{i}\"}}}}\n"))
        .collect();
    let out = plugin_test(echo, &events, &["--batch"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("handle-batch, 3 events in one call: ok ("), "{s}");
    assert!(s.contains("  event 3 (infrahub/send.echo.request) in handle-batch: ok, 1 emitted"), "{s}");
    assert!(s.contains("Reply to: m3") && !s.contains("DIFFERS"), "{s}");

    let out = plugin_test(echo, &events, &["--batch", "--json"]);
    let reports: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(reports.len(), 3 + 1 + 3, "one per handle call, the batch call, one per event in it");
    assert_eq!((reports[3]["call"].as_str(), reports[3]["events"].as_u64()), (Some("handle-batch"), Some(3)));
    assert!(reports[3]["fuel"].as_u64().unwrap() > 0, "{}", reports[3]);
    assert_eq!(reports[6]["emitted"], reports[2]["emitted"], "the same answer for the same event");

    let hostile = crate::support::guest("hostile");
    let dir = tempfile::tempdir().unwrap();
    let manifest = |mode: &str| {
        let path = dir.path().join(format!("{mode}.toml"));
        std::fs::write(
            &path,
            format!(
                "world = \"handler\"\nemits = [\"infrahub/send.echo.request\"]\nconfig = {{ mode = \"{mode}\" }}\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let out = plugin_test(&hostile, &events, &["--batch", "--config", &manifest("batch-differs")]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("in handle-batch: ok, 1 emitted -- DIFFERS from what handle answered"),
        "{}",
        text(&out.stdout)
    );
    let out = plugin_test(&hostile, &events, &["--batch", "--config", &manifest("batch-short")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains(
            "handle-batch, 3 events in one call: FAILED bad_output: handle-batch answered 2 results for 3 events"
        ),
        "{}",
        text(&out.stdout)
    );

    let plan = repo().join("guest-examples/prebuilt/cleanup_plan.wasm");
    let ev = r#"{"type":"fixinventory/cleanup_plan","data":{"kind":"action","message_type":"cleanup_plan","data":{"resources":[]}}}"#;
    let out = plugin_test(plan.to_str().unwrap(), ev, &["--batch"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--batch: the component exports no handle-batch"), "{}", text(&out.stderr));
}

/// `serve --threads N` sizes the runtime that serves HTTP and the other doors: a router on
/// one thread takes and processes events as on the default, and says so in `/metrics`; zero
/// is refused with a message.
#[tokio::test]
async fn serve_threads_sizes_the_runtime_of_the_doors() {
    let dir = tempfile::tempdir().unwrap();
    let router = crate::durability::Router::start_with(
        dir.path(),
        crate::durability::ECHO,
        &["--threads", "1"],
        Stdio::inherit(),
    )
    .await;
    let client = crate::support::client();
    let res = client
        .post(format!("{}/v1/events/infrahub/send.echo.request", router.base))
        .json(&serde_json::json!({"message": "on one thread"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let done = router.finished(&id).await;
    assert_eq!(done["state"], "processed", "{done}");
    assert_eq!(done["emitted"].as_array().map(Vec::len), Some(1), "{done}");
    let metrics = client.get(format!("{}/metrics", router.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l == "eventyard_runtime_threads 1"), "{metrics}");

    let out = eventyard(&["serve", "--threads", "0"], dir.path(), None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--threads"), "{}", text(&out.stderr));
}
