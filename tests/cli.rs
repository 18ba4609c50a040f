//! `eventyard validate` and friends, as a user runs them.

use crate::support::{eventyard, repo, text};

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
