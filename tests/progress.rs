//! The CLI says what a long job is doing on stderr, and only where it is wanted: never when
//! stderr is not a terminal (as here: the tests read it through a pipe) unless
//! `--progress always` asks; stdout stays the job's answer either way.

use crate::support::{eventyard, guest, post, repo, text, Server};
use eventyard::config::Config;
use serde_json::{json, Value};

fn lines(stdout: &[u8]) -> Vec<Value> {
    text(stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}"))).collect()
}

#[test]
fn schemas_generate_shows_progress_only_when_asked() {
    let out = tempfile::tempdir().unwrap();
    let args = |extra: &[&'static str]| {
        let mut a = vec!["schemas", "generate", "--source", "schemas/source", "--out", out.path().to_str().unwrap()];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |extra: &[&'static str]| {
        let a = args(extra);
        eventyard(&a.iter().map(String::as_str).collect::<Vec<_>>(), &repo(), None)
    };
    let quiet = run(&[]);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert_eq!(text(&quiet.stderr), "", "no progress into a pipe");
    assert!(text(&quiet.stdout).starts_with("wrote 43 schemas"), "{}", text(&quiet.stdout));
    let shown = run(&["--progress", "always"]);
    assert!(shown.status.success());
    assert!(text(&shown.stderr).contains("writing ["), "{}", text(&shown.stderr));
    assert_eq!(text(&shown.stdout), text(&quiet.stdout), "stdout is the answer either way");
    let never = run(&["--progress", "never"]);
    assert_eq!(text(&never.stderr), "");
}

#[test]
fn plugin_test_over_many_events_keeps_stdout_a_report_per_event() {
    /// Enough events for a job worth a progress bar.
    const EVENTS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    let one = json!({ "type": "infrahub/send.echo.request", "data": { "message": "hi" } }).to_string();
    std::fs::write(&file, format!("{one}\n").repeat(EVENTS)).unwrap();
    let echo = repo().join("guest-examples/prebuilt/echo.wasm");
    let args = ["plugin", "test", echo.to_str().unwrap(), "--event", file.to_str().unwrap(), "--json"];
    let quiet = eventyard(&args, &repo(), None);
    assert!(quiet.status.success(), "{}", text(&quiet.stderr));
    assert_eq!(lines(&quiet.stdout).len(), EVENTS);
    assert!(!text(&quiet.stderr).contains("events ["), "{}", text(&quiet.stderr));
    let shown = eventyard(&[&args[..], &["--progress", "always"]].concat(), &repo(), None);
    assert!(shown.status.success());
    assert_eq!(lines(&shown.stdout).len(), EVENTS, "progress never goes to stdout");
    assert!(text(&shown.stderr).contains(&format!("/{EVENTS}")), "{}", text(&shown.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_wait_follows_the_attempts_to_their_end() {
    let s = Server::with_config(Config::parse(&crate::durability::boom(&guest("hostile"), "trap")).unwrap()).await;
    for i in 0..3 {
        post(&s, "infrahub/send.echo.request", json!({ "message": format!("m{i}") })).await;
    }
    assert_eq!(crate::support::dead_letters(&s, "", 3).await.len(), 3);
    let server = format!("http://{}", s.addr);
    let out = tokio::task::spawn_blocking(move || {
        let args =
            ["dead-letters", "replay", "--server", &server, "--plugin", "boom", "--wait", "--progress", "always"];
        eventyard(&args, &repo(), None)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The plugin still traps: every replayed letter came back as a new one.
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), json!({ "replayed": 3, "failed_again": 3 }));
    assert!(text(&out.stderr).contains("replaying ["), "{}", text(&out.stderr));
}
