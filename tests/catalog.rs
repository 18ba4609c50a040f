//! The generator: golden files, `--check` drift detection, and parse errors that name the
//! file and line.

use crate::support::{eventyard, repo, text};
use eventyard::schema::catalog::{generate, Catalog};
use std::path::Path;

fn copy_sources(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(repo().join("schemas/source")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn committed_schemas_are_exactly_what_the_tables_generate() {
    let dir = tempfile::tempdir().unwrap();
    let out = eventyard(&["schemas", "generate", "--out", dir.path().to_str().unwrap()], &repo(), None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let catalog = Catalog::from_dir(&repo().join("schemas/source")).unwrap();
    assert_eq!(catalog.events.len(), 43);
    for def in &catalog.events {
        let fresh = std::fs::read_to_string(dir.path().join(def.relative_path())).unwrap();
        let committed = std::fs::read_to_string(repo().join("schemas").join(def.relative_path()))
            .unwrap_or_else(|_| panic!("{} is not committed", def.type_name()));
        assert_eq!(fresh, committed, "{} drifted; run `eventyard schemas generate`", def.type_name());
    }
    // And the embedded catalogue the server uses is the same.
    assert!(generate::check(&Catalog::embedded().unwrap(), &repo().join("schemas")).unwrap().is_empty());
}

#[test]
fn check_names_every_drifted_file_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    copy_sources(&dir.path().join("schemas/source"));
    let ok = eventyard(&["schemas", "generate"], dir.path(), None);
    assert!(ok.status.success());
    let clean = eventyard(&["schemas", "generate", "--check"], dir.path(), None);
    assert_eq!(clean.status.code(), Some(0), "{}", text(&clean.stderr));

    let edited = dir.path().join("schemas/infrahub/send.echo.request.schema.json");
    std::fs::write(&edited, "{}\n").unwrap();
    std::fs::remove_file(dir.path().join("schemas/idem/idem-low.schema.json")).unwrap();
    std::fs::write(dir.path().join("schemas/idem/old.schema.json"), "{}").unwrap();
    let out = eventyard(&["schemas", "generate", "--check"], dir.path(), None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("schemas/infrahub/send.echo.request.schema.json: differs"), "{err}");
    assert!(err.contains("schemas/idem/idem-low.schema.json: missing"), "{err}");
    assert!(err.contains("schemas/idem/old.schema.json: no table generates it"), "{err}");
    assert!(err.contains("3 file(s) out of date"), "{err}");
}

#[test]
fn a_table_change_shows_up_as_drift() {
    let dir = tempfile::tempdir().unwrap();
    copy_sources(&dir.path().join("schemas/source"));
    assert!(eventyard(&["schemas", "generate"], dir.path(), None).status.success());
    let src = dir.path().join("schemas/source/infrahub.md");
    let md = std::fs::read_to_string(&src).unwrap().replace(
        "| **message** | The message to send | string | None |",
        "| **message** | The message to send | string | \"hi\" |",
    );
    std::fs::write(&src, md).unwrap();
    let out = eventyard(&["schemas", "generate", "--check"], dir.path(), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("send.echo.request.schema.json: differs"));
}

#[test]
fn parse_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    copy_sources(&src);
    let path = src.join("infrahub.md");
    let md = std::fs::read_to_string(&path).unwrap();
    let line = md.lines().position(|l| l.contains("**worker_id**")).unwrap() + 1;
    std::fs::write(
        &path,
        md.replace(
            "| **worker_id** | The worker ID that got elected | string | None |",
            "| **worker_id** | The worker ID | strnig | None |",
        ),
    )
    .unwrap();
    let out = eventyard(
        &["schemas", "generate", "--source", src.to_str().unwrap(), "--out", dir.path().to_str().unwrap()],
        &repo(),
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&format!("infrahub.md:{line}: unknown type `strnig`")), "{err}");

    // A ragged table row and a broken JSON example name their lines too.
    std::fs::write(
        &path,
        md.replace("| **branch** | The branch that was rebased | string | None |", "| **branch** | string | None |"),
    )
    .unwrap();
    let err = Catalog::from_dir(&src).unwrap_err().to_string();
    let line = md.lines().position(|l| l.contains("**branch**")).unwrap() + 1;
    assert_eq!(err, format!("{}:{line}: table row has 3 cells, the header has 4", path.display()));
    std::fs::write(&path, &md).unwrap();
    let idem = src.join("idem.md");
    let text_md = std::fs::read_to_string(&idem).unwrap();
    let line = text_md.lines().position(|l| l.contains("\"FINISHED/CREATED")).unwrap() + 1;
    std::fs::write(&idem, text_md.replace("\"FINISHED/CREATED", "FINISHED/CREATED")).unwrap();
    let err = Catalog::from_dir(&src).unwrap_err().to_string();
    assert!(err.starts_with(&format!("{}:{line}: example is not JSON", idem.display())), "{err}");
}

#[test]
fn generated_schemas_follow_the_documented_rules() {
    let c = Catalog::embedded().unwrap();
    let get = |t: &str| c.events.iter().find(|d| d.type_name() == t).unwrap().schema.clone();
    let fx = get("fixinventory/cleanup_plan");
    assert_eq!(fx["properties"]["message_type"]["const"], "cleanup_plan");
    assert_eq!(fx["description"], "Cleanup infrastructure apps can listen on this event.");
    assert_eq!(fx["additionalProperties"], false);
    assert!(fx["properties"]["data"].get("additionalProperties").is_none(), "data stays open");

    let ih = get("infrahub/request.proposed_change.pipeline");
    assert_eq!(ih["x-priority"], 5);
    assert_eq!(ih["properties"]["meta"]["$ref"], "#/$defs/meta");
    assert_eq!(ih["properties"]["check_type"]["default"], "all");
    let req: Vec<&str> = ih["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(req, ["proposed_change", "source_branch", "source_branch_sync_with_git", "destination_branch"]);
    assert_eq!(ih["$defs"]["meta"]["properties"]["priority"]["maximum"], 5);
    let resp = get("infrahub/response/git.file.get");
    assert_eq!(resp["properties"]["passed"]["default"], true);
    assert!(resp["properties"]["data"]["properties"]["content"].get("type").is_none());

    let state = get("idem/idem-state");
    assert_eq!(
        state["properties"]["tags"]["properties"]["type"]["enum"],
        serde_json::json!(["state-pre", "state-post"])
    );
    let status = get("idem/idem-status");
    assert_eq!(status["properties"]["message"]["enum"].as_array().unwrap().len(), 9);
    // Every Infrahub message carries the same Meta definition.
    let metas: std::collections::BTreeSet<String> =
        c.events.iter().filter(|d| d.family == "infrahub").map(|d| d.schema["$defs"]["meta"].to_string()).collect();
    assert_eq!(metas.len(), 1);
}
