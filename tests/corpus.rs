//! The corpus under `tests/corpus/`: every one of the 43 types with valid bodies and invalid
//! ones, run through both `eventyard validate` and HTTP, asserting verdicts and the exact
//! failing instance paths.

use crate::support::{client, corpus, eventyard, failing_paths, repo, text, Server};
use serde_json::Value;
use std::collections::BTreeSet;

#[test]
fn corpus_covers_every_type_with_one_valid_and_two_invalid_bodies() {
    let registry = eventyard::app::registry(&Default::default()).unwrap();
    let known: BTreeSet<String> = registry.iter().map(|t| t.name.to_string()).collect();
    let cases = corpus();
    let covered: BTreeSet<String> = cases.iter().map(|c| c.type_name.clone()).collect();
    assert_eq!(known.len(), 43);
    assert_eq!(covered, known);
    for c in &cases {
        assert!(!c.valid.is_empty() && c.invalid.len() >= 2, "{} needs 1 valid and 2 invalid bodies", c.type_name);
    }
}

#[test]
fn corpus_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    for case in corpus() {
        for (i, body) in case.valid.iter().enumerate() {
            let out = eventyard(&["validate", &case.type_name, "-"], &repo(), Some(body.to_string().as_bytes()));
            assert_eq!(out.status.code(), Some(0), "{} valid #{i}: {}", case.type_name, text(&out.stdout));
            assert!(text(&out.stdout).starts_with("valid: "));
        }
        for (why, body, paths) in &case.invalid {
            let file = dir.path().join("event.json");
            std::fs::write(&file, body.to_string()).unwrap();
            let out = eventyard(&["validate", &case.type_name, file.to_str().unwrap(), "--json"], &repo(), None);
            assert_eq!(out.status.code(), Some(1), "{}: {why}", case.type_name);
            let report: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["valid"], false);
            assert_eq!(&failing_paths(&report["errors"]), paths, "{}: {why}", case.type_name);
        }
    }
}

#[tokio::test]
async fn corpus_through_http() {
    let server = Server::start().await;
    let http = client();
    for case in corpus() {
        let url = server.url(&format!("/v1/events/{}", case.type_name));
        for body in &case.valid {
            let res = http.post(&url).json(body).send().await.unwrap();
            assert_eq!(res.status(), 202, "{}", case.type_name);
            let v: Value = res.json().await.unwrap();
            assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()));
        }
        for (why, body, paths) in &case.invalid {
            let res = http.post(&url).json(body).send().await.unwrap();
            assert_eq!(res.status(), 400, "{}: {why}", case.type_name);
            let v: Value = res.json().await.unwrap();
            assert_eq!(v["error"], "validation_failed");
            assert_eq!(v["type"], case.type_name.as_str());
            assert_eq!(&failing_paths(&v["errors"]), paths, "{}: {why}", case.type_name);
            for e in v["errors"].as_array().unwrap() {
                assert!(e["schema_path"].as_str().is_some_and(|s| s.starts_with('/')), "{e}");
                assert!(e["message"].as_str().is_some_and(|s| !s.is_empty()), "{e}");
            }
        }
    }
}

#[test]
fn corpus_errors_read_in_place_match_the_tree_validators() {
    let registry = eventyard::app::registry(&Default::default()).unwrap();
    for case in corpus() {
        let ty = registry.get(&case.type_name).unwrap();
        for body in &case.valid {
            assert!(ty.check(&body.to_string()).is_ok(), "{}: valid body refused in place", case.type_name);
        }
        for (why, body, _) in &case.invalid {
            let by_tree = ty.validate(body).unwrap_err();
            let Err(eventyard::schema::Rejection::Invalid(in_place)) = ty.check(&body.to_string()) else {
                panic!("{}: {why}: accepted in place", case.type_name);
            };
            let key =
                |v: &eventyard::schema::Violation| (v.instance_path.clone(), v.schema_path.clone(), v.message.clone());
            let (mut a, mut b): (Vec<_>, Vec<_>) =
                (by_tree.iter().map(key).collect(), in_place.iter().map(key).collect());
            a.sort();
            b.sort();
            assert_eq!(a, b, "{}: {why}", case.type_name);
        }
    }
}
