//! The example plugins shipped inside the binary, so that `eventyard serve` shows them
//! working on a machine with no Wasm toolchain. They are the release builds of
//! `guest-examples/rust/`, refreshed by `guest-examples/build.sh`; the test
//! `prebuilt_plugins_match_their_sources` fails when the sources changed without it.

/// `(name, component bytes)`; a config names one as `component = "builtin:<name>"`.
pub const BUILTINS: &[(&str, &[u8])] = &[
    ("cleanup-plan", include_bytes!("../../guest-examples/prebuilt/cleanup_plan.wasm")),
    ("generator", include_bytes!("../../guest-examples/prebuilt/generator.wasm")),
    ("metrics", include_bytes!("../../guest-examples/prebuilt/metrics.wasm")),
    ("echo", include_bytes!("../../guest-examples/prebuilt/echo.wasm")),
    ("priority-filter", include_bytes!("../../guest-examples/prebuilt/priority_filter.wasm")),
];

pub fn get(name: &str) -> Option<&'static [u8]> {
    BUILTINS.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

pub fn names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(n, _)| *n)
}
