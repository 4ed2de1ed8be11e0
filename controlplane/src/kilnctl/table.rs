//! Output of kilnctl: the server's answer as JSON (`-o json`) or as a table of columns, each
//! column a header and a function of the answer's type.

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Output format.
#[derive(Clone, Copy, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

/// Table columns of a `T`: header and cell.
pub type Columns<T> = &'static [(&'static str, fn(&T) -> String)];

/// A cell: the JSON form of `v` without quotes, `-` for null, lists joined with commas.
pub fn cell<S: Serialize + ?Sized>(v: &S) -> String {
    value_cell(&serde_json::to_value(v).unwrap_or(Value::Null))
}

fn value_cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(value_cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A timestamp cell, as the API writes it (RFC 3339).
pub fn time(t: &OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// An optional timestamp cell (`-` when absent).
pub fn maybe_time(t: &Option<OffsetDateTime>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".into())
}

/// Prints one answer.
pub fn print<T: Serialize>(out: Output, v: &T, cols: Columns<T>) {
    print_rows(out, v, std::slice::from_ref(v), cols);
}

/// Prints a list answer.
pub fn print_list<T: Serialize>(out: Output, v: &[T], cols: Columns<T>) {
    print_rows(out, &v, v, cols);
}

fn print_rows<T>(out: Output, answer: &impl Serialize, rows: &[T], cols: Columns<T>) {
    if out == Output::Json {
        // Through `Value`: keys sorted, as kilnctl has always printed them.
        let v = serde_json::to_value(answer).unwrap_or(Value::Null);
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return;
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|(_, f)| f(r)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h.len())
        })
        .collect();
    let line = |items: Vec<String>| {
        let parts: Vec<String> = items
            .iter()
            .zip(&widths)
            .map(|(s, w)| format!("{s:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(cols.iter().map(|(h, _)| h.to_string()).collect());
    for r in cells {
        line(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_read_like_the_json() {
        assert_eq!(cell(&None::<String>), "-");
        assert_eq!(cell(&vec!["web", "db"]), "web,db");
        assert_eq!(cell(&true), "true");
        assert_eq!(cell(&Some(42u64)), "42");
        assert_eq!(cell("plain"), "plain");
        let t = OffsetDateTime::parse("2026-01-01T00:00:00Z", &Rfc3339).unwrap();
        assert_eq!(time(&t), "2026-01-01T00:00:00Z");
        assert_eq!(maybe_time(&None), "-");
    }
}
