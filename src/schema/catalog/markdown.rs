//! The small subset of Markdown the catalogue sources use: a front-matter block, headings,
//! pipe tables, `**Label**: value` lines and fenced code blocks. Every item keeps its
//! 1-based line number so that a parse error can name the exact line of the source file.

use super::CatalogError;
use std::collections::BTreeMap;
use std::path::Path;

/// One logical block of a Markdown document.
#[derive(Debug)]
pub enum Block<'a> {
    Heading {
        level: usize,
        text: &'a str,
        line: usize,
    },
    Table(Table),
    /// `**Label**: value` (or `**Label:** value`).
    Field {
        label: &'a str,
        value: &'a str,
        line: usize,
    },
    Code {
        lang: &'a str,
        text: String,
        line: usize,
    },
    /// Any other non-empty line (prose).
    Text(&'a str),
}

/// A pipe table: a header row, a `---` separator row, then data rows.
#[derive(Debug)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
    pub line: usize,
}

#[derive(Debug)]
pub struct Row {
    pub cells: Vec<String>,
    pub line: usize,
}

/// A parsed document: the `key: value` front matter and the blocks after it.
pub struct Document<'a> {
    pub front: BTreeMap<String, String>,
    pub blocks: Vec<Block<'a>>,
}

/// Where an error is: the file name and a line, as every catalogue error must say.
pub struct Origin<'p> {
    pub path: &'p Path,
}

impl Origin<'_> {
    pub fn err(&self, line: usize, message: impl Into<String>) -> CatalogError {
        CatalogError::Parse { file: self.path.to_path_buf(), line, message: message.into() }
    }
}

pub fn parse<'a>(text: &'a str, origin: &Origin<'_>) -> Result<Document<'a>, CatalogError> {
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    let mut front = BTreeMap::new();
    if lines.first().map(|l| l.trim()) == Some("---") {
        i = 1;
        loop {
            let Some(l) = lines.get(i) else {
                return Err(origin.err(1, "front matter opened with `---` is never closed"));
            };
            i += 1;
            if l.trim() == "---" {
                break;
            }
            let (k, v) = l.split_once(':').ok_or_else(|| origin.err(i, "front matter lines are `key: value`"))?;
            front.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let mut blocks = Vec::new();
    while i < lines.len() {
        let line_no = i + 1;
        let l = lines[i].trim();
        if let Some(fence) = l.strip_prefix("```") {
            let lang = fence.trim();
            let mut body = String::new();
            i += 1;
            loop {
                let Some(c) = lines.get(i) else {
                    return Err(origin.err(line_no, "code block is never closed"));
                };
                i += 1;
                if c.trim_start().starts_with("```") {
                    break;
                }
                body.push_str(c);
                body.push('\n');
            }
            blocks.push(Block::Code { lang, text: body, line: line_no });
            continue;
        }
        if l.starts_with('#') {
            let level = l.chars().take_while(|&c| c == '#').count();
            let text = l[level..].trim().trim_end_matches('#').trim();
            blocks.push(Block::Heading { level, text, line: line_no });
        } else if l.starts_with('|') {
            let header = split_row(l);
            let sep = lines.get(i + 1).map(|s| s.trim()).unwrap_or("");
            if !is_separator(sep) {
                return Err(origin.err(line_no + 1, "a table header must be followed by a `|---|` separator row"));
            }
            let mut rows = Vec::new();
            i += 2;
            while let Some(r) = lines.get(i).map(|s| s.trim()).filter(|s| s.starts_with('|')) {
                let cells = split_row(r);
                if cells.len() != header.len() {
                    return Err(origin
                        .err(i + 1, format!("table row has {} cells, the header has {}", cells.len(), header.len())));
                }
                rows.push(Row { cells, line: i + 1 });
                i += 1;
            }
            blocks.push(Block::Table(Table { header, rows, line: line_no }));
            continue;
        } else if let Some(rest) = l.strip_prefix("**") {
            if let Some((label, value)) = rest.split_once("**") {
                let label = label.trim_end_matches(':');
                let value = value.trim_start_matches(':').trim();
                blocks.push(Block::Field { label, value, line: line_no });
            }
        } else if !l.is_empty() {
            blocks.push(Block::Text(l));
        }
        i += 1;
    }
    Ok(Document { front, blocks })
}

fn is_separator(l: &str) -> bool {
    l.starts_with('|') && l.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Splits `| a | b \| c |` into cells, honouring `\|` escapes and stripping `**bold**`.
fn split_row(l: &str) -> Vec<String> {
    let inner = l.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cur.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    cells.push(cur);
    cells
        .into_iter()
        .map(|c| {
            let c = c.trim();
            let c = c.strip_prefix("**").and_then(|c| c.strip_suffix("**")).unwrap_or(c);
            c.trim().to_string()
        })
        .collect()
}

impl Table {
    /// The index of the column whose header is `name` (case-insensitive).
    pub fn column(&self, name: &str, origin: &Origin<'_>) -> Result<usize, CatalogError> {
        self.header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
            .ok_or_else(|| origin.err(self.line, format!("table has no `{name}` column")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_escaped_pipes_and_drop_bold() {
        assert_eq!(split_row("| **a** | b \\| c |"), vec!["a", "b | c"]);
    }

    #[test]
    fn ragged_row_names_its_line() {
        let origin = Origin { path: Path::new("x.md") };
        let err = parse("| a | b |\n|---|---|\n| 1 |\n", &origin).err().unwrap();
        assert_eq!(err.to_string(), "x.md:3: table row has 1 cells, the header has 2");
    }
}
