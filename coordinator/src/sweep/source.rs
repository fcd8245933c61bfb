//! Where each key and value of a sweep file sits: figment merges the layers but forgets lines
//! and key order, so the file is also parsed with `toml`'s spanned document parser and every
//! key path is indexed by the byte offset of its key and of its value.

use figment::value::Dict;
use std::collections::HashMap;
use toml::de::{DeTable, DeValue};

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// Byte offsets of one entry of the document: its key (absent for array elements) and its value.
#[derive(Debug, Clone, Copy)]
struct Entry {
    key: Option<usize>,
    value: usize,
}

/// The positions of every key path in a sweep file, and the order of each table's keys.
#[derive(Debug, Default)]
pub struct SourceMap {
    line_starts: Vec<usize>,
    entries: HashMap<Vec<String>, Entry>,
    /// Keys of each table (by path) in the order they appear in the file.
    key_order: HashMap<Vec<String>, Vec<String>>,
}

/// A TOML syntax error, with the position it was found at.
#[derive(Debug)]
pub struct SyntaxError {
    pub at: Option<LineCol>,
    pub message: String,
}

impl SourceMap {
    /// Parses `text` as TOML and indexes it.
    pub fn parse(text: &str) -> Result<Self, SyntaxError> {
        let mut map = SourceMap {
            line_starts: line_starts(text),
            ..SourceMap::default()
        };
        let doc = DeTable::parse(text).map_err(|e| SyntaxError {
            at: e.span().map(|s| map.line_col(text, s.start)),
            message: lowercase_first(e.message().trim()),
        })?;
        let mut path = Vec::new();
        map.index_table(doc.get_ref(), &mut path);
        Ok(map)
    }

    /// The document `text` (which [`SourceMap::parse`] accepted) as figment values, read by
    /// the same TOML parser. figment must not parse the file itself: its parser reads an older
    /// TOML (no trailing commas in inline tables, no `\e`, no times without seconds), and
    /// values the span parser leaves unchecked (`1e999`, integers past `i64`) would come back
    /// as a multi-line error without a position.
    pub fn document(&self, text: &str) -> Result<Dict, SyntaxError> {
        toml::from_str(text).map_err(|e| SyntaxError {
            at: e.span().map(|s| self.line_col(text, s.start)),
            message: lowercase_first(e.message().trim()),
        })
    }

    fn index_table(&mut self, table: &DeTable<'_>, path: &mut Vec<String>) {
        let mut keys: Vec<(usize, String)> = Vec::with_capacity(table.len());
        for (key, value) in table.iter() {
            let name = key.get_ref().to_string();
            keys.push((key.span().start, name.clone()));
            path.push(name);
            self.entries.insert(
                path.clone(),
                Entry {
                    key: Some(key.span().start),
                    value: value.span().start,
                },
            );
            self.index_value(value.get_ref(), path);
            path.pop();
        }
        keys.sort_by_key(|(start, _)| *start);
        self.key_order
            .insert(path.clone(), keys.into_iter().map(|(_, k)| k).collect());
    }

    fn index_value(&mut self, value: &DeValue<'_>, path: &mut Vec<String>) {
        match value {
            DeValue::Table(table) => self.index_table(table, path),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.entries.insert(
                        path.clone(),
                        Entry {
                            key: None,
                            value: item.span().start,
                        },
                    );
                    self.index_value(item.get_ref(), path);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    /// The position of the key at `path` (or of the value, for array elements), falling back
    /// to the closest enclosing entry the file has.
    pub fn key_position(&self, text: &str, path: &[String]) -> Option<LineCol> {
        self.lookup(path)
            .map(|e| self.line_col(text, e.key.unwrap_or(e.value)))
    }

    /// The position of the value at `path`, falling back to the closest enclosing entry.
    pub fn value_position(&self, text: &str, path: &[String]) -> Option<LineCol> {
        self.lookup(path).map(|e| self.line_col(text, e.value))
    }

    /// The keys of the table at `path`, in file order (empty if the file has no such table).
    pub fn keys_in_order(&self, path: &[String]) -> &[String] {
        self.key_order.get(path).map_or(&[], Vec::as_slice)
    }

    fn lookup(&self, path: &[String]) -> Option<Entry> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.entries.get(&path[..n]).copied())
    }

    /// Columns are counted from the line's prefix on demand: the map keeps byte offsets only,
    /// so a 100,000-element axis costs one entry per element and nothing more.
    fn line_col(&self, text: &str, offset: usize) -> LineCol {
        let offset = offset.min(text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        LineCol { line, column }
    }
}

fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect()
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn indexes_keys_values_and_order() {
        let text = "name = \"x\"\n\n[[experiment]]\nname = \"a\"\nlr = [0.1, 0.2]\nepochs = 3\n[[experiment]]\n  model = [{ arch = \"ffv1\" }]\n";
        let map = SourceMap::parse(text).unwrap();
        let at = |parts: &[&str]| map.key_position(text, &p(parts)).unwrap();
        assert_eq!(at(&["name"]), LineCol { line: 1, column: 1 });
        assert_eq!(
            at(&["experiment", "0", "lr"]),
            LineCol { line: 5, column: 1 }
        );
        assert_eq!(
            at(&["experiment", "0", "lr", "1"]),
            LineCol {
                line: 5,
                column: 12
            }
        );
        assert_eq!(at(&["experiment", "1", "model"]).line, 8);
        assert_eq!(
            at(&["experiment", "1", "model", "0", "arch"]),
            LineCol {
                line: 8,
                column: 14
            }
        );
        // Unknown children fall back to their closest parent.
        assert_eq!(at(&["experiment", "0", "lr", "9"]).line, 5);
        assert_eq!(
            map.keys_in_order(&p(&["experiment", "0"])),
            ["name", "lr", "epochs"]
        );
        assert_eq!(map.keys_in_order(&[]), ["name", "experiment"]);
        assert_eq!(
            map.value_position(text, &p(&["experiment", "0", "epochs"])),
            Some(LineCol {
                line: 6,
                column: 10
            })
        );
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = SourceMap::parse("name = \"x\"\nlr = = 1\n").unwrap_err();
        assert_eq!(err.at.unwrap().line, 2);
        let err = SourceMap::parse("a = 1\na = 2\n").unwrap_err();
        assert_eq!(err.at.unwrap().line, 2, "{}", err.message);
    }
}
