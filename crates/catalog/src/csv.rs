//! A small reader for the embedded CSV files: RFC 4180 quoting, `\n` or
//! `\r\n` line ends, a header row, and typed cell access by column name.
//!
//! The embedded files hold no quoted cells (see `data/PROVENANCE.md`), but
//! [`Catalog::from_csv`](crate::Catalog::from_csv) accepts caller data too,
//! so quoting is handled rather than assumed away.

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;

use crate::DataError;

/// One parsed file: its name (for errors), header index and rows.
pub(crate) struct Table<'a> {
    file: &'static str,
    columns: HashMap<&'a str, usize>,
    rows: Vec<Record<'a>>,
}

/// One row, with its 1-based line number.
pub(crate) struct Row<'t, 'a> {
    table: &'t Table<'a>,
    line: usize,
    cells: &'t [Cow<'a, str>],
}

impl<'a> Table<'a> {
    /// Parses `text`. The first record is the header; blank lines are skipped.
    pub(crate) fn parse(file: &'static str, text: &'a str) -> Result<Self, DataError> {
        let mut records = Records {
            text,
            pos: 0,
            line: 1,
        };
        let (_, header) = records
            .next_record(file)?
            .ok_or_else(|| DataError::new(file, 1, "the file is empty (no header row)"))?;
        let mut columns = HashMap::new();
        for (i, name) in header.iter().enumerate() {
            let Cow::Borrowed(name) = name else {
                return Err(DataError::new(
                    file,
                    1,
                    "quoted header cells are not supported",
                ));
            };
            if columns.insert(*name, i).is_some() {
                return Err(DataError::new(
                    file,
                    1,
                    format!("duplicate column `{name}`"),
                ));
            }
        }
        let mut rows = Vec::new();
        while let Some((line, cells)) = records.next_record(file)? {
            if cells.len() == 1 && cells[0].is_empty() {
                continue;
            }
            if cells.len() != header.len() {
                return Err(DataError::new(
                    file,
                    line,
                    format!(
                        "{} cells where the header has {}",
                        cells.len(),
                        header.len()
                    ),
                ));
            }
            rows.push((line, cells));
        }
        Ok(Table {
            file,
            columns,
            rows,
        })
    }

    /// Fails unless every named column is present.
    pub(crate) fn require(&self, names: &[&str]) -> Result<(), DataError> {
        for name in names {
            if !self.columns.contains_key(name) {
                return Err(DataError::new(
                    self.file,
                    1,
                    format!("missing column `{name}`"),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn rows(&self) -> impl Iterator<Item = Row<'_, 'a>> {
        self.rows.iter().map(move |(line, cells)| Row {
            table: self,
            line: *line,
            cells,
        })
    }
}

impl Row<'_, '_> {
    #[cfg(test)]
    pub(crate) fn line(&self) -> usize {
        self.line
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> DataError {
        DataError::new(self.table.file, self.line, message)
    }

    /// The raw cell of `column` (empty string for an empty cell).
    pub(crate) fn str(&self, column: &str) -> Result<&str, DataError> {
        let index = self
            .table
            .columns
            .get(column)
            .ok_or_else(|| self.error(format!("missing column `{column}`")))?;
        Ok(self.cells.get(*index).map(|c| c.as_ref()).unwrap_or(""))
    }

    /// The cell of `column`, `None` when empty.
    pub(crate) fn opt_str(&self, column: &str) -> Result<Option<&str>, DataError> {
        Ok(Some(self.str(column)?).filter(|s| !s.is_empty()))
    }

    /// The cell parsed as `T`; an empty cell is an error.
    pub(crate) fn parse<T: FromStr>(&self, column: &str) -> Result<T, DataError> {
        self.opt_parse(column)?
            .ok_or_else(|| self.error(format!("column `{column}` is empty")))
    }

    /// The cell parsed as `T`, `None` when empty.
    pub(crate) fn opt_parse<T: FromStr>(&self, column: &str) -> Result<Option<T>, DataError> {
        match self.opt_str(column)? {
            None => Ok(None),
            Some(text) => text
                .parse()
                .map(Some)
                .map_err(|_| self.error(format!("column `{column}`: cannot parse `{text}`"))),
        }
    }

    /// The cell parsed as `T`, `default` when empty.
    pub(crate) fn parse_or<T: FromStr>(&self, column: &str, default: T) -> Result<T, DataError> {
        Ok(self.opt_parse(column)?.unwrap_or(default))
    }

    /// A `true`/`false` cell; empty reads as `false`.
    pub(crate) fn bool(&self, column: &str) -> Result<bool, DataError> {
        match self.str(column)? {
            "true" => Ok(true),
            "false" | "" => Ok(false),
            other => Err(self.error(format!("column `{column}`: `{other}` is not true/false"))),
        }
    }
}

/// A record: the line it starts on, and its cells.
type Record<'a> = (usize, Vec<Cow<'a, str>>);

/// Splits text into records of cells.
struct Records<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Records<'a> {
    /// The next record and the line it starts on, or `None` at the end.
    fn next_record(&mut self, file: &'static str) -> Result<Option<Record<'a>>, DataError> {
        if self.pos >= self.text.len() {
            return Ok(None);
        }
        let start_line = self.line;
        let bytes = self.text.as_bytes();
        let mut cells = Vec::new();
        loop {
            // One cell starting at self.pos.
            if bytes.get(self.pos) == Some(&b'"') {
                let mut value = String::new();
                let mut i = self.pos + 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(DataError::new(
                                file,
                                start_line,
                                "unterminated quoted cell",
                            ))
                        }
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => {
                            value.push('"');
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => {
                            // Copy up to the next quote in one go (keeps UTF-8 intact).
                            let next = self.text[i..].find('"').map_or(self.text.len(), |n| i + n);
                            let chunk = &self.text[i..next];
                            self.line += chunk.matches('\n').count();
                            value.push_str(chunk);
                            i = next;
                        }
                    }
                }
                cells.push(Cow::Owned(value));
                self.pos = i;
            } else {
                let rest = &self.text[self.pos..];
                let end = rest.find([',', '\n', '\r']).unwrap_or(rest.len());
                cells.push(Cow::Borrowed(&rest[..end]));
                self.pos += end;
            }
            match bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'\r') if bytes.get(self.pos + 1) == Some(&b'\n') => {
                    self.pos += 2;
                    self.line += 1;
                    return Ok(Some((start_line, cells)));
                }
                Some(b'\n') => {
                    self.pos += 1;
                    self.line += 1;
                    return Ok(Some((start_line, cells)));
                }
                None => return Ok(Some((start_line, cells))),
                Some(_) => {
                    return Err(DataError::new(
                        file,
                        self.line,
                        "unexpected character after a quoted cell",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_cells() {
        let t = Table::parse("t.csv", "a,b,c\n1,\"x, \"\"y\"\"\",\n\n2,z,3\r\n").unwrap();
        let rows: Vec<_> = t.rows().collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].str("b").unwrap(), "x, \"y\"");
        assert_eq!(rows[0].opt_str("c").unwrap(), None);
        assert_eq!(rows[1].parse::<u32>("c").unwrap(), 3);
        assert_eq!(rows[1].line(), 4);
    }

    #[test]
    fn quoted_cell_spanning_lines_keeps_line_numbers() {
        let t = Table::parse("t.csv", "a,b\n\"1\n2\",x\n3,y\n").unwrap();
        let rows: Vec<_> = t.rows().collect();
        assert_eq!(rows[0].str("a").unwrap(), "1\n2");
        assert_eq!(rows[1].line(), 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = Table::parse("t.csv", "a,b\n1\n").err().unwrap();
        assert_eq!(
            err.to_string(),
            "t.csv line 2: 1 cells where the header has 2"
        );
        assert!(Table::parse("t.csv", "").is_err());
        assert!(Table::parse("t.csv", "a,a\n").is_err());
        assert!(Table::parse("t.csv", "a\n\"x").is_err());
        assert!(Table::parse("t.csv", "a,b\n\"x\"y,1\n").is_err());
        let t = Table::parse("t.csv", "a,b\nyes,q\n").unwrap();
        let row = t.rows().next().unwrap();
        assert!(row.bool("a").is_err());
        assert!(row.parse::<u32>("b").is_err());
        assert!(row.str("zzz").is_err());
        assert!(t.require(&["a", "zzz"]).is_err());
    }
}
