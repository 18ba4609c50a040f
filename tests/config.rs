//! Configuration: unknown keys and impossible values are refused at start-up, by the
//! library and by the real `eventyard serve`, with a message naming the key.

use crate::support::{eventyard, guest, text};
use eventyard::config::Config;

fn refused(toml: &str) -> String {
    let config = match Config::parse(toml) {
        Err(e) => return e.to_string(),
        Ok(c) => c,
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    match runtime.block_on(eventyard::app::build(&config)) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted:\n{toml}"),
    }
}

fn handler(extra: &str) -> String {
    format!(
        "[[plugin]]\nname = \"echo\"\ncomponent = \"{}\"\nworld = \"handler\"\nemits = [\"infrahub/response/send.echo.request\"]\n{extra}\n",
        guest("echo")
    )
}

#[test]
fn unknown_keys_and_impossible_values_name_the_key() {
    let cases: &[(String, &str)] = &[
        (handler("colour = \"red\""), "unknown field `colour`"),
        (handler("limits = { memory = 5 }"), "unknown field `memory`"),
        (handler("limits = { memory_bytes = 10 }"), "plugin[0] (echo).limits.memory_bytes: must be between"),
        (handler("limits = { deadline_ms = 0 }"), "plugin[0] (echo).limits"),
        (handler("capabilities = [\"network\"]"), "unknown variant `network`"),
        (handler("config = 3"), "plugin[0] (echo).config: must be a table"),
        (handler("") + &handler(""), "plugin[1] (echo).name: must be non-empty and unique"),
        (
            handler("") + "[[route]]\nmatch = \"x/*\"\nhandlers = [\"nope\"]\n",
            "route[0].handlers: no plugin named `nope`",
        ),
        (
            handler("") + "[[route]]\nmatch = \"x/*\"\nfilters = [\"echo\"]\n",
            "route[0].filters: plugin `echo` is a handler, not a filter",
        ),
        (handler("") + "[[route]]\nhandlers = [\"echo\"]\n", "route[0].match: set exactly one of"),
        (handler("") + "[[route]]\nregex = \"(\"\nhandlers = [\"echo\"]\n", "route[0].regex"),
        (
            handler("").replace("response/send.echo.request", "response/nope"),
            "plugin[0] (echo).emits: unknown event type `infrahub/response/nope`",
        ),
        (handler("").replace(&guest("echo"), "builtin:nope"), "no built-in plugin `nope`"),
        (handler("").replace(&guest("echo"), "/nonexistent.wasm"), "plugin `echo`: /nonexistent.wasm"),
        (handler("").replace("world = \"handler\"", "world = \"filter\""), "does not fit world `filter`"),
        ("[pipeline]\nqueue = 0\n".to_string(), "pipeline.queue: must be greater than 0"),
    ];
    for (toml, expected) in cases {
        let message = refused(toml);
        assert!(message.contains(expected), "expected `{expected}` in `{message}` for\n{toml}");
    }
}

#[test]
fn a_component_that_does_not_compile_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm not really").unwrap();
    let message = refused(&handler("").replace(&guest("echo"), bad.to_str().unwrap()));
    assert!(message.contains("plugin `echo`: component does not compile"), "{message}");
}

#[test]
fn serve_refuses_a_bad_config_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eventyard.toml");
    std::fs::write(&path, handler("limits = { fuel = 0 }")).unwrap();
    let out = eventyard(&["serve", "--config", path.to_str().unwrap(), "--listen", "127.0.0.1:0"], dir.path(), None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("plugin[0] (echo).limits"), "{}", text(&out.stderr));
}

#[test]
fn the_embedded_default_config_is_valid() {
    let c = Config::embedded_default();
    assert_eq!(c.plugins.len(), 5);
    assert!(c.plugins.iter().all(|p| p.component.starts_with("builtin:")));
}
