//! JSON string literals written by hand where the router writes JSON per event (log
//! records, `202` bodies). Why: serde_json escapes a string one byte at a time through a
//! table, which profiles of the end-to-end row put at ~8% of both the HTTP threads' and
//! the plugin workers' time (ids, type names and plugin names, ~150 bytes per finished
//! event). The strings the router writes almost never need escaping, and asking whether one
//! does is a loop the compiler vectorises; when one does, serde_json writes it, so the
//! output is byte for byte what `serde_json::to_writer` would write.

/// Appends `s` as a JSON string literal (quoted, escaped exactly as serde_json escapes).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        serde_json::to_writer(out, s).expect("a string serialises");
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends `n` as a JSON number (priorities and hop counts, written per event).
pub fn write_u8(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + n / 10 % 10);
    }
    out.push(b'0' + n % 10);
}

/// Whether any byte is one serde_json escapes: a control character below 0x20, `"` or `\`.
/// A fold without early exit, so that it compiles to vector instructions.
fn needs_escape(bytes: &[u8]) -> bool {
    bytes.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> Vec<u8> {
        let mut out = b"x".to_vec();
        write_str(&mut out, s);
        out
    }

    fn serde(s: &str) -> Vec<u8> {
        let mut out = b"x".to_vec();
        serde_json::to_writer(&mut out, s).unwrap();
        out
    }

    #[test]
    fn writes_every_u8_as_serde_json_does() {
        for n in 0..=u8::MAX {
            let mut out = Vec::new();
            write_u8(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }

    #[test]
    fn writes_what_serde_json_writes_for_every_single_character_and_mixes() {
        let mut cases: Vec<String> = (0u32..0x300).filter_map(char::from_u32).map(String::from).collect();
        cases.extend(
            [
                "",
                "0192d3f4-aaaa-7bbb-8ccc-0123456789ab",
                "infrahub/response/send.echo.request",
                "plugin:echo",
                "a\"b",
                "back\\slash",
                "tab\there",
                "line\nbreak and a long tail past any vector width: 0123456789abcdef0123456789abcdef",
                "\u{7f}\u{80}\u{2028}ü€😀",
                "\u{1}",
            ]
            .map(String::from),
        );
        // Each special byte at every position of a string longer than a vector.
        for at in 0..70 {
            for special in ['"', '\\', '\n', '\u{1f}', '\u{0}'] {
                let mut s = "y".repeat(70);
                s.replace_range(at..at + 1, &special.to_string());
                cases.push(s);
            }
        }
        for s in &cases {
            assert_eq!(ours(s), serde(s), "{s:?}");
        }
    }
}
