//! What every subcommand hands back: tables, printed as markdown (the form
//! docs/PERFORMANCE.md quotes) and, with `--json FILE`, written as JSON.
//! Subcommands with typed rows (`classify`, `footprint`, `gateway`) write
//! those rows with [`write_json`]; the others build [`Table`]s.

use serde::Serialize;
use std::path::Path;
use std::time::Duration;

/// One table: a title, column names and rows of cells as printed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    #[must_use]
    pub fn new(title: impl Into<String>, columns: &[&str]) -> Table {
        Table { title: title.into(), columns: columns.iter().map(|c| (*c).to_string()).collect(), rows: Vec::new() }
    }

    /// Appends a row (as many cells as columns).
    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len(), "{}", self.title);
        self.rows.push(cells);
    }

    /// The table in markdown, headed by its title; the first column is left
    /// aligned, the others right aligned.
    #[must_use]
    pub fn markdown(&self) -> String {
        let mut s = format!("{}\n\n| {} |\n|", self.title, self.columns.join(" | "));
        for i in 0..self.columns.len() {
            s.push_str(if i == 0 { "---|" } else { "---:|" });
        }
        s.push('\n');
        for r in &self.rows {
            s.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        s
    }
}

/// Prints `tables` as markdown and, with `json`, writes them there.
///
/// # Errors
/// The JSON file cannot be written.
pub fn emit(tables: &[Table], json: Option<&Path>) -> anyhow::Result<()> {
    for (i, t) in tables.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print!("{}", t.markdown());
    }
    match json {
        Some(path) => write_json(path, &tables),
        None => Ok(()),
    }
}

/// Writes `value` as pretty JSON (with a final newline) to `path`.
///
/// # Errors
/// Serialization or I/O.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write `{}`: {e}", path.display()))
}

/// The median of `v` (the upper one for an even count); `Duration::ZERO` when empty.
#[must_use]
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Milliseconds with one decimal.
#[must_use]
pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_and_json_carry_the_same_cells() {
        let mut t = Table::new("Lint", &["stage", "median ms"]);
        t.row(vec!["parse".into(), "281.0".into()]);
        assert_eq!(t.markdown(), "Lint\n\n| stage | median ms |\n|---|---:|\n| parse | 281.0 |\n");
        let v: serde_json::Value = serde_json::to_value(&t).expect("json");
        assert_eq!(v["rows"][0][1], "281.0");
        assert_eq!(
            median(vec![Duration::from_millis(3), Duration::from_millis(1), Duration::from_millis(2)]),
            Duration::from_millis(2)
        );
        assert_eq!(ms(Duration::from_micros(1250)), "1.2");
    }
}
