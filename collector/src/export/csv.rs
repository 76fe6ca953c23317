//! FOCUS rows as CSV: UTF-8, a header line, comma-separated, `\n` line
//! ends, RFC 4180 quoting (a field with a comma, quote or line break is
//! quoted, its quotes doubled). Money is the exact decimal string, never an
//! exponent; an empty field is NULL.

use std::io::Write;

use chrono::SecondsFormat;

use super::Cell;

pub struct CsvWriter<W: Write> {
    out: W,
    line: String,
}

impl<W: Write> CsvWriter<W> {
    /// Writes the header line.
    pub fn new(out: W, header: Vec<&str>) -> std::io::Result<Self> {
        let mut w = Self {
            out,
            line: String::new(),
        };
        for (i, name) in header.iter().enumerate() {
            if i > 0 {
                w.line.push(',');
            }
            push_text(&mut w.line, name);
        }
        w.end_line()?;
        Ok(w)
    }

    pub fn write_record(&mut self, cells: &[Cell<'_>]) -> std::io::Result<()> {
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                self.line.push(',');
            }
            push_cell(&mut self.line, cell);
        }
        self.end_line()
    }

    fn end_line(&mut self) -> std::io::Result<()> {
        self.line.push('\n');
        self.out.write_all(self.line.as_bytes())?;
        self.line.clear();
        Ok(())
    }

    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One field: money as its exact normalized decimal, instants in ISO 8601
/// UTC with `Z` (whole seconds unless the instant has a fraction).
pub fn push_cell(line: &mut String, cell: &Cell<'_>) {
    match cell {
        Cell::Text(s) => push_text(line, s),
        Cell::Decimal(d) => line.push_str(&d.normalize().to_string()),
        Cell::Int64(v) => line.push_str(&v.to_string()),
        Cell::Int32(v) => line.push_str(&v.to_string()),
        Cell::Bool(v) => line.push_str(if *v { "true" } else { "false" }),
        Cell::List(items) => push_text(line, &serde_json::Value::from(items.to_vec()).to_string()),
        Cell::Time(t) => line.push_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Cell::Null => {}
    }
}

fn push_text(line: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        line.push('"');
        line.push_str(&s.replace('"', "\"\""));
        line.push('"');
    } else {
        line.push_str(s);
    }
}
