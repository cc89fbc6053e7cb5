//! CSV that a spreadsheet opens as text.
//!
//! File names, paths, sharing targets and user agents are chosen by whoever made the file or
//! followed the link: a cell such as `=HYPERLINK("https://evil.example","open")` would run as a
//! formula when an analyst opens a `filetrail search --csv` report in a spreadsheet. As the
//! OWASP CSV injection guidance recommends
//! (<https://owasp.org/www-community/attacks/CSV_Injection>), every cell that begins with `=`,
//! `+`, `-`, `@`, a tab or a carriage return is written with a leading `'`, which spreadsheets
//! take as "text" and do not show; the `csv` crate quotes separators, quotes and line breaks.
//! JSON output is never altered.

use std::borrow::Cow;
use std::io::Write;

/// The characters a spreadsheet reads as the start of a formula.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// `cell` as a spreadsheet shows it as text.
pub fn neutralise(cell: &str) -> Cow<'_, str> {
    if cell.starts_with(FORMULA_STARTS) {
        Cow::Owned(format!("'{cell}"))
    } else {
        Cow::Borrowed(cell)
    }
}

/// Writes records with every cell [`neutralise`]d.
pub struct CsvOut<W: Write> {
    writer: csv::Writer<W>,
}

impl<W: Write> CsvOut<W> {
    pub fn new(out: W) -> Self {
        Self {
            writer: csv::Writer::from_writer(out),
        }
    }

    /// Writes one record.
    ///
    /// # Errors
    /// When the output fails.
    pub fn write<I, S>(&mut self, cells: I) -> csv::Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.writer
            .write_record(cells.into_iter().map(|c| neutralise(c.as_ref()).into_owned()))
    }

    /// Flushes the output.
    ///
    /// # Errors
    /// When the output fails.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(cells: &[&str]) -> String {
        let mut out = Vec::new();
        let mut csv = CsvOut::new(&mut out);
        csv.write(cells).unwrap();
        csv.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_a_spreadsheet_would_run_as_formulas_are_written_as_text() {
        assert_eq!(
            written(&[
                "=HYPERLINK(\"https://evil.example\",\"open\")",
                "+1",
                "-2+3",
                "@SUM(A1)"
            ]),
            "\"'=HYPERLINK(\"\"https://evil.example\"\",\"\"open\"\")\",'+1,'-2+3,'@SUM(A1)\n"
        );
        assert_eq!(written(&["\tcmd", "\rcmd"]), "'\tcmd,\"'\rcmd\"\n");
    }

    #[test]
    fn other_cells_are_written_as_they_are() {
        assert_eq!(
            written(&["Budget v2.xlsx", "a=b", "", "2026-12-07T10:00:00Z", "x,y"]),
            "Budget v2.xlsx,a=b,,2026-12-07T10:00:00Z,\"x,y\"\n"
        );
    }
}
