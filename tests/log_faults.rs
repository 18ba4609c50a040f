//! The log under attack and under faults (issue 11, items 7, 8, 9, 17, 18): damaged
//! segments, a disk that fills up, bodies nested as deep as the log can read back, files at
//! rest, and bounded dead letters. Every test runs a real router (in process, or the real
//! binary) and talks to it over HTTP.

use crate::durability::{boom, Router};
use crate::support::{client, guest, metric, post, wait_metric, Server};
use eventyard::config::Config;
use eventyard::store::segment;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A router whose log lives in `dir` (so a second one can start on it: a restart).
async fn router_on(dir: &Path, toml: &str, tweak: impl FnOnce(&mut Config)) -> Server {
    let mut config = Config::parse(toml).unwrap();
    config.store.dir = Some(dir.to_path_buf());
    tweak(&mut config);
    Server::with_config(config).await
}

async fn status_code(s: &Server, id: &str) -> u16 {
    client().get(s.url(&format!("/v1/events/{id}"))).send().await.unwrap().status().as_u16()
}

const ECHO_TYPE: &str = "infrahub/send.echo.request";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_middle_of_a_segment_loses_only_the_damaged_event_and_a_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    // Events no route wants: finished on arrival, remembered (status 200) after a restart
    // only if their record is read back.
    let ids = {
        let s = router_on(dir.path(), "", |_| {}).await;
        let mut ids = Vec::new();
        for i in 0..30 {
            ids.push(post(&s, ECHO_TYPE, json!({ "message": format!("m{i}") })).await);
        }
        ids
    };
    let (_, first) = segment::segments(dir.path()).unwrap().remove(0);
    let mut bytes = std::fs::read(&first).unwrap();
    // Bad bytes over the 16th event's record (its id, the frame around it is unchanged).
    let at = find(&bytes, ids[15].as_bytes()).expect("the event is in the first segment");
    bytes[at - 40..at + 20].fill(0xFF);
    std::fs::write(&first, &bytes).unwrap();

    let s = router_on(dir.path(), "", |_| {}).await;
    for (i, id) in ids.iter().enumerate() {
        let expected = if i == 15 { 404 } else { 200 };
        assert_eq!(status_code(&s, id).await, expected, "event {i} after the restart");
    }
    let aside = first.with_extension("seg.damaged");
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "the damaged segment is kept aside as it was");
    // Events after the restart go to a new segment (the damaged one is finished and may
    // be compacted away by now; its copy aside stays).
    let mut later = Vec::new();
    for i in 0..3 {
        later.push(post(&s, ECHO_TYPE, json!({ "message": format!("later{i}") })).await);
    }
    drop(s);

    // A crash in the middle of a write leaves half a frame at the end: only that is cut,
    // and it is no damage (nothing is copied aside).
    let (_, newest) = segment::segments(dir.path()).unwrap().pop().expect("the newest segment");
    let intact = std::fs::read(&newest).unwrap();
    assert!(find(&intact, later[2].as_bytes()).is_some(), "the later events are in the newest segment");
    let mut torn = segment::FRAME_MAGIC.to_vec();
    torn.extend_from_slice(&[0, 1, 0, 0, 9, 9, 9, 9, b'{', b'"']);
    let mut f = std::fs::OpenOptions::new().append(true).open(&newest).unwrap();
    std::io::Write::write_all(&mut f, &torn).unwrap();
    drop(f);
    let s = router_on(dir.path(), "", |_| {}).await;
    for id in &later {
        assert_eq!(status_code(&s, id).await, 200, "an intact record before a torn tail is kept");
    }
    if let Ok(now) = std::fs::read(&newest) {
        assert_eq!(now, intact, "the torn tail is cut, nothing else");
    }
    assert!(!newest.with_extension("seg.damaged").exists(), "a torn tail is not damage");
    assert_eq!(std::fs::read(&aside).unwrap(), bytes, "the copy aside is kept");
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A tmpfs of `size` mounted on a fresh directory; unmounted when dropped. `None` (after
/// saying why) when this machine does not let the test mount one.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir }),
            Ok(o) => {
                eprintln!("SKIPPED: cannot mount a tmpfs here: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a router of this test may still hold a file open.
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills `path` with a file `filler` until writes fail; returns its size.
fn fill(dir: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let chunk = vec![7u8; 16 * 1024];
    let mut n = 0u64;
    while f.write_all(&chunk).and_then(|_| f.sync_data()).is_ok() {
        n += chunk.len() as u64;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_undoes_the_write_and_ingestion_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("4m") else { return };
    let log = disk.path().join("log");
    let s = router_on(&log, "", |_| {}).await;
    let big = |i: usize| json!({ "message": format!("{i}:{}", "x".repeat(100_000)) });
    let ok = post(&s, ECHO_TYPE, big(0)).await;
    // The disk fills up (someone else's file); a 100 kB event cannot be written.
    fill(disk.path());
    let send = |key: &'static str, body: Value| {
        let url = s.url(&format!("/v1/events/{ECHO_TYPE}"));
        async move { client().post(url).header("idempotency-key", key).json(&body).send().await.unwrap() }
    };
    let res = send("on-a-full-disk", big(1)).await;
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["error"], "log_unavailable", "{v}");
    let res = send("never-retried", big(2)).await;
    assert_eq!(res.status(), 503);
    assert_eq!(status_code(&s, "on-a-full-disk").await, 404, "a refused event is not accepted");
    // Nothing of the failed writes is left in the segment: no damage, no torn tail.
    for (_, path) in segment::segments(&log).unwrap() {
        let bytes = std::fs::read(&path).unwrap();
        let scan = segment::scan(&bytes);
        assert!(scan.skipped.is_empty() && scan.keep == bytes.len(), "{}: {scan:?}", path.display());
    }

    // Space comes back: the same router takes events again, by itself.
    std::fs::remove_file(disk.path().join("filler")).unwrap();
    let res = send("on-a-full-disk", big(1)).await;
    assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
    drop(s);

    // After a restart: the accepted events are there, the refused one never comes back.
    let s = router_on(&log, "", |_| {}).await;
    assert_eq!(status_code(&s, &ok).await, 200);
    assert_eq!(status_code(&s, "on-a-full-disk").await, 200);
    assert_eq!(status_code(&s, "never-retried").await, 404, "a 503'd event is not processed later");
    drop(s);
}

/// A Fix Inventory event whose `data` holds arrays nested so that the whole body is `depth` deep.
fn nested_body(depth: usize) -> String {
    let inner = depth - 2; // the body object and its `data` object
    format!(
        r#"{{"kind":"event","message_type":"cleanup","data":{{"deep":{}{}}}}}"#,
        "[".repeat(inner),
        "]".repeat(inner)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_accepted_body_survives_a_restart_and_one_level_more_is_refused() {
    use eventyard::event::body::MAX_DATA_DEPTH;
    let dir = tempfile::tempdir().unwrap();
    let native = |s: &Server, body: String| {
        let url = s.url("/v1/events/fixinventory/cleanup");
        async move { client().post(url).header("content-type", "application/json").body(body).send().await.unwrap() }
    };
    let structured = |s: &Server, id: &str, body: &str| {
        let url = s.url("/v1/events");
        let ce = format!(
            r#"{{"specversion":"1.0","id":"{id}","source":"depth-test","type":"fixinventory/cleanup","data":{body}}}"#
        );
        async move {
            client().post(url).header("content-type", "application/cloudevents+json").body(ce).send().await.unwrap()
        }
    };
    let (deepest, deepest_ce) = {
        let s = router_on(dir.path(), "", |_| {}).await;
        let res = native(&s, nested_body(MAX_DATA_DEPTH)).await;
        assert_eq!(res.status(), 202);
        let id = res.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
        let res = structured(&s, "deepest-ce", &nested_body(MAX_DATA_DEPTH)).await;
        assert_eq!(res.status(), 202, "{}", res.text().await.unwrap());
        for res in [
            native(&s, nested_body(MAX_DATA_DEPTH + 1)).await,
            structured(&s, "too-deep-ce", &nested_body(MAX_DATA_DEPTH + 1)).await,
        ] {
            assert_eq!(res.status(), 400);
            let v: Value = res.json().await.unwrap();
            assert_eq!((v["error"].as_str(), v["limit"].as_u64()), (Some("too_deep"), Some(MAX_DATA_DEPTH as u64)));
        }
        (id, "deepest-ce")
    };
    let s = router_on(dir.path(), "", |_| {}).await;
    assert_eq!(status_code(&s, &deepest).await, 200, "read back after the restart");
    assert_eq!(status_code(&s, deepest_ce).await, 200, "read back after the restart");
    let damaged =
        std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| e.path().to_string_lossy().ends_with(".damaged"));
    assert!(!damaged, "no record was refused at recovery");
}

/// Every file under `dir` is `0600`, every directory `0700`: (path, mode) of those that are not.
fn not_owner_only(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode != 0o700 {
                bad.push((path.clone(), mode));
            }
            bad.extend(not_owner_only(&path));
        } else if mode != 0o600 {
            bad.push((path, mode));
        }
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_at_rest_are_owner_only_and_the_admin_token_is_not_logged_in_full() {
    let dir = tempfile::tempdir().unwrap();
    // A router with no admin token configured makes one; its log goes to a file we read.
    let log_path = dir.path().join("router.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let router = Router::start_logging_to(dir.path(), &boom(&guest("hostile"), "trap"), log.into()).await;
    let data = dir.path().join("data");
    let token_file = data.join("log/admin-token");
    let token = std::fs::read_to_string(&token_file).expect("the generated admin token's file").trim().to_string();
    let admin = reqwest::Client::new();
    let bearer = format!("Bearer {token}");
    // Traffic that writes every kind of file: events, a dead letter, a config document,
    // a subscriber list, an uploaded plugin.
    let res =
        admin.post(format!("{}/v1/events/{ECHO_TYPE}", router.base)).json(&json!({ "message": "m" })).send().await;
    assert_eq!(res.unwrap().status(), 202);
    let res = admin
        .put(format!("{}/v1/config/fix.core", router.base))
        .header("authorization", &bearer)
        .json(&json!({ "a": 1 }))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let res = admin
        .post(format!("{}/subscriber/sub-1/pre_collect", router.base))
        .header("authorization", &bearer)
        .send()
        .await;
    assert!(res.unwrap().status().is_success());
    let echo = std::fs::read(crate::support::repo().join("guest-examples/prebuilt/echo.wasm")).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("manifest", "world = \"handler\"\nemits = [\"infrahub/response/send.echo.request\"]\nroutes = [{ match = \"infrahub/send.echo.request\" }]\n")
        .part("component", reqwest::multipart::Part::bytes(echo).file_name("plugin.wasm"));
    let res = admin
        .put(format!("{}/v1/plugins/echo-up", router.base))
        .header("authorization", &bearer)
        .multipart(form)
        .send()
        .await;
    assert_eq!(res.unwrap().status(), 201);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !data.join("log/dead-letters.jsonl").exists() {
        assert!(Instant::now() < deadline, "no dead letter written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(router);

    for expected in [
        "log/admin-token",
        "log/dead-letters.jsonl",
        "log/config/fix.core.json",
        "log/subscribers.json",
        "log/plugins/echo-up.wasm",
        "log/plugins/echo-up.toml",
    ] {
        assert!(data.join(expected).exists(), "{expected} was written");
    }
    assert!(segment::segments(&data.join("log")).unwrap().len() >= 1);
    assert_eq!(not_owner_only(&data), vec![], "files readable by others in the data directory");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.contains(&token), "the full admin token is in the router's log:\n{text}");
    let shown = &token[..6]; // `TOKEN_SHOWN` in src/http/auth.rs
    let line =
        text.lines().find(|l| l.contains("admin token")).unwrap_or_else(|| panic!("no admin token line:\n{text}"));
    assert!(line.contains(shown) && line.contains(&token_file.display().to_string()), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_bounded_purged_with_a_tombstone_and_counted_in_the_log_bound() {
    let dir = tempfile::tempdir().unwrap();
    let toml = boom(&guest("hostile"), "trap");
    let letters_file = dir.path().join("dead-letters.jsonl");
    {
        // Four kept of five: purging one afterwards leaves fewer dead lines than live ones,
        // so the file is appended to (compaction waits until dead lines are over half).
        let s = router_on(dir.path(), &toml, |c| c.store.max_dead_letters = 4).await;
        for i in 0..5u32 {
            // One at a time, so that "the oldest" is well defined.
            post(&s, ECHO_TYPE, json!({ "message": format!("m{i}") })).await;
            wait_metric(&s, "eventyard_dead_letters_dropped_total", i.saturating_sub(3) as f64).await;
            wait_letter(&s, &format!("m{i}")).await;
        }
        let all: Value = client().get(s.url("/v1/dead-letters")).send().await.unwrap().json().await.unwrap();
        assert_eq!(all["count"], 4, "at most store.max_dead_letters: {all}");
        let kept: Vec<&str> = all["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["event"]["data"]["message"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["m4", "m3", "m2", "m1"], "the oldest was dropped");
        assert_eq!(metric(&s, "eventyard_dead_letters_dropped_total").await, Some(1.0));
        assert_eq!(metric(&s, "eventyard_dead_letters").await, Some(4.0));

        // Purging one appends a tombstone: the file is not rewritten.
        let before = std::fs::read(&letters_file).unwrap();
        let id = all["dead_letters"][0]["id"].as_str().unwrap();
        let res = client().delete(s.url(&format!("/v1/dead-letters/{id}"))).send().await.unwrap();
        assert!(res.status().is_success());
        let after = std::fs::read(&letters_file).unwrap();
        assert!(after.starts_with(&before), "appended to, not rewritten");
        let tail = String::from_utf8_lossy(&after[before.len()..]).to_string();
        assert_eq!(tail, format!("{{\"tombstone\":\"{id}\"}}\n"));
    }
    let s = router_on(dir.path(), &toml, |c| c.store.max_dead_letters = 4).await;
    let all: Value = client().get(s.url("/v1/dead-letters")).send().await.unwrap().json().await.unwrap();
    assert_eq!(all["count"], 3, "the purged one stays gone after a restart: {all}");
    drop(s);

    // The dead-letter file counts in the log's bound: past it, ingestion answers 503 until
    // the dead letters are purged (the purge compacts the file).
    let dir = tempfile::tempdir().unwrap();
    let s = router_on(dir.path(), &toml, |c| {
        c.store.segment_bytes = 4096;
        c.store.max_bytes = 16 * 1024;
    })
    .await;
    let mut accepted = 0;
    let refused = loop {
        let res = client()
            .post(s.url(&format!("/v1/events/{ECHO_TYPE}")))
            .json(&json!({ "message": "x".repeat(2000) }))
            .send()
            .await
            .unwrap();
        if res.status() == 503 {
            break res.json::<Value>().await.unwrap();
        }
        assert_eq!(res.status(), 202);
        accepted += 1;
        assert!(accepted < 200, "never refused");
        wait_metric(&s, "eventyard_events_dead_lettered_total", accepted as f64).await;
    };
    assert_eq!(refused["error"], "overloaded", "{refused}");
    assert!(std::fs::metadata(dir.path().join("dead-letters.jsonl")).unwrap().len() > 8 * 1024);
    let res = client().delete(s.url("/v1/dead-letters?kind=trap")).send().await.unwrap();
    assert!(res.status().is_success());
    assert_eq!(std::fs::metadata(dir.path().join("dead-letters.jsonl")).unwrap().len(), 0, "compacted");
    post(&s, ECHO_TYPE, json!({ "message": "after the purge" })).await;
}

/// Waits until a dead letter holds the event whose message is `message`.
async fn wait_letter(s: &Server, message: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all: Value = client().get(s.url("/v1/dead-letters")).send().await.unwrap().json().await.unwrap();
        if all["dead_letters"].as_array().unwrap().iter().any(|d| d["event"]["data"]["message"] == message) {
            return;
        }
        assert!(Instant::now() < deadline, "no dead letter for {message}: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod segment_reader {
    //! The segment reader against damage: random byte overwrites, bit flips and
    //! truncations never make it panic, and every frame they did not touch is read back.
    use eventyard::store::segment::{self, FRAME_MAGIC};
    use eventyard::store::Record;
    use proptest::prelude::*;

    /// A segment of `n` records (ids `r0`, `r1`, ...) and each frame's byte range.
    fn segment_of(sizes: &[usize]) -> (Vec<u8>, Vec<std::ops::Range<usize>>) {
        let mut bytes = segment::SEGMENT_MAGIC.to_vec();
        let mut frames = Vec::new();
        for (i, size) in sizes.iter().enumerate() {
            let start = bytes.len();
            let record = Record::Cancelled { ids: vec![format!("r{i}"), "p".repeat(*size)] };
            segment::frame(&record, &mut bytes).unwrap();
            frames.push(start..bytes.len());
        }
        (bytes, frames)
    }

    fn ids(bytes: &[u8]) -> Vec<String> {
        segment::scan(bytes)
            .payloads
            .into_iter()
            .map(|r| match serde_json::from_slice::<Record>(&bytes[r]).unwrap() {
                Record::Cancelled { ids } => ids[0].clone(),
                _ => unreachable!(),
            })
            .collect()
    }

    #[derive(Debug, Clone)]
    enum Damage {
        Overwrite { at: usize, with: Vec<u8> },
        Flip { at: usize, bit: u8 },
        Truncate { at: usize },
        Magic { at: usize },
    }

    fn damage() -> impl Strategy<Value = Damage> {
        prop_oneof![
            (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..64))
                .prop_map(|(at, with)| Damage::Overwrite { at, with }),
            (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Damage::Flip { at, bit }),
            any::<usize>().prop_map(|at| Damage::Truncate { at }),
            any::<usize>().prop_map(|at| Damage::Magic { at }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn damage_never_panics_the_reader_nor_loses_an_intact_frame(
            sizes in proptest::collection::vec(0usize..300, 1..20),
            damages in proptest::collection::vec(damage(), 1..4),
        ) {
            let (mut bytes, frames) = segment_of(&sizes);
            let mut touched = vec![false; bytes.len()];
            let mut len = bytes.len();
            for d in damages {
                // (where, how many bytes, what each becomes)
                let (at, n, with): (usize, usize, Box<dyn Fn(u8, usize) -> u8>) = match d {
                    Damage::Overwrite { at, with } => (at, with.len(), Box::new(move |_, k| with[k])),
                    Damage::Flip { at, bit } => (at, 1, Box::new(move |b, _| b ^ (1 << bit))),
                    // A stray magic: resync must not be fooled into swallowing good frames.
                    Damage::Magic { at } => (at, 4, Box::new(|_, k| FRAME_MAGIC[k])),
                    Damage::Truncate { at } => {
                        len = at % (len + 1);
                        continue;
                    }
                };
                if len == 0 {
                    continue;
                }
                let at = at % len;
                for k in at..(at + n).min(len) {
                    bytes[k] = with(bytes[k], k - at);
                    touched[k] = true;
                }
            }
            bytes.truncate(len);
            let found = ids(&bytes);
            for (i, frame) in frames.iter().enumerate() {
                let intact = frame.end <= len && !touched[frame.clone()].iter().any(|t| *t);
                if intact {
                    prop_assert!(found.contains(&format!("r{i}")), "intact frame {i} lost: found {found:?}");
                }
            }
            let scan = segment::scan(&bytes);
            prop_assert!(scan.keep <= bytes.len());
        }

        #[test]
        fn random_bytes_never_panic_the_reader(bytes in proptest::collection::vec(any::<u8>(), 0..2048), header in any::<bool>()) {
            let mut all = if header { segment::SEGMENT_MAGIC.to_vec() } else { Vec::new() };
            all.extend(bytes);
            let scan = segment::scan(&all);
            prop_assert!(scan.keep <= all.len());
            for r in scan.payloads {
                prop_assert!(r.end <= all.len());
            }
        }
    }
}
