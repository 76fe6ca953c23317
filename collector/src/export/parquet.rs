//! A small Parquet table writer over the parquet crate's column writers
//! (no Arrow: the Arrow layer would cost the build four times the parquet
//! crate itself, for nothing these flat tables need).
//!
//! Each [`ParquetTable::write`] is one row group, written column by column.
//! Types: strings are `binary (STRING)`, money `fixed_len_byte_array(16)
//! (DECIMAL(38, 20))`, instants `int64 (TIMESTAMP(MICROS, true))`, lists of
//! strings the standard three-level `LIST`; Snappy compression.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{
    BoolType, ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int32Type,
    Int64Type,
};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedColumnWriter, SerializedFileWriter};
use parquet::schema::parser::parse_message_type;

use super::{decimal_to_i128, Cell, ExportError, DECIMAL_PRECISION, DECIMAL_SCALE};

/// How a column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int64,
    Int32,
    Bool,
    /// DECIMAL(38, 20): money, and FOCUS quantities (FOCUS: Decimal).
    Decimal,
    /// Microseconds since the epoch, UTC.
    Time,
    /// A list of strings, never null (empty instead).
    TextList,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

impl Column {
    pub const fn new(name: &'static str, kind: Kind, nullable: bool) -> Self {
        Self {
            name,
            kind,
            nullable,
        }
    }

    fn schema_line(&self) -> String {
        let rep = if self.nullable {
            "optional"
        } else {
            "required"
        };
        let name = self.name;
        match self.kind {
            Kind::Text => format!("{rep} binary {name} (STRING);"),
            Kind::Int64 => format!("{rep} int64 {name};"),
            Kind::Int32 => format!("{rep} int32 {name};"),
            Kind::Bool => format!("{rep} boolean {name};"),
            Kind::Decimal => format!(
                "{rep} fixed_len_byte_array(16) {name} (DECIMAL({DECIMAL_PRECISION},{DECIMAL_SCALE}));"
            ),
            Kind::Time => format!("{rep} int64 {name} (TIMESTAMP(MICROS,true));"),
            Kind::TextList => format!(
                "required group {name} (LIST) {{ repeated group list {{ required binary element (STRING); }} }}"
            ),
        }
    }
}

/// A Parquet file being written, one row group per [`ParquetTable::write`].
pub struct ParquetTable<W: Write + Send> {
    writer: SerializedFileWriter<W>,
    columns: &'static [Column],
}

/// The row a value belongs to, to name it when it cannot be written.
pub type RowKey<'a> = (&'a str, &'a str);

impl<W: Write + Send> ParquetTable<W> {
    pub fn new(
        out: W,
        name: &str,
        columns: &'static [Column],
        metadata: Vec<KeyValue>,
    ) -> Result<Self, ExportError> {
        let fields: Vec<String> = columns.iter().map(Column::schema_line).collect();
        let schema = parse_message_type(&format!("message {name} {{ {} }}", fields.join(" ")))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_created_by(format!(
                "llm-billing collector {}",
                env!("CARGO_PKG_VERSION")
            ))
            .set_key_value_metadata(Some(metadata))
            .build();
        Ok(Self {
            writer: SerializedFileWriter::new(out, Arc::new(schema), Arc::new(props))?,
            columns,
        })
    }

    /// Writes `rows` (cells in column order; `keys[i]` names row i as
    /// (tenant, request id)) as one row group.
    pub fn write<'c, R: AsRef<[Cell<'c>]>>(
        &mut self,
        rows: &[R],
        keys: &[RowKey<'_>],
    ) -> Result<(), ExportError> {
        let mut group = self.writer.next_row_group()?;
        for (j, column) in self.columns.iter().enumerate() {
            let Some(mut writer) = group.next_column()? else {
                break;
            };
            write_column(&mut writer, column, j, rows, keys)?;
            writer.close()?;
        }
        group.close()?;
        Ok(())
    }

    /// Writes the footer and hands the output back.
    pub fn finish(self) -> Result<W, ExportError> {
        Ok(self.writer.into_inner()?)
    }
}

/// The values of column `j` that are not null, and its definition levels
/// when it may be null (0: null, 1: a value).
fn present<'c, T, R: AsRef<[Cell<'c>]>>(
    rows: &[R],
    j: usize,
    nullable: bool,
    mut value: impl FnMut(usize, &Cell<'c>) -> Result<Option<T>, ExportError>,
) -> Result<(Vec<T>, Option<Vec<i16>>), ExportError> {
    let mut values = Vec::with_capacity(rows.len());
    let mut levels = Vec::with_capacity(if nullable { rows.len() } else { 0 });
    for (i, row) in rows.iter().enumerate() {
        let v = row.as_ref().get(j).map_or(Ok(None), |c| value(i, c))?;
        if nullable {
            levels.push(i16::from(v.is_some()));
        }
        values.extend(v);
    }
    Ok((values, nullable.then_some(levels)))
}

fn write_column<'c, R: AsRef<[Cell<'c>]>>(
    writer: &mut SerializedColumnWriter<'_>,
    column: &Column,
    j: usize,
    rows: &[R],
    keys: &[RowKey<'_>],
) -> Result<(), ExportError> {
    let n = column.nullable;
    match column.kind {
        Kind::Text => {
            let (values, levels) = present(rows, j, n, |_, c| {
                Ok(match c {
                    Cell::Text(s) => Some(ByteArray::from(s.as_bytes().to_vec())),
                    _ => None,
                })
            })?;
            writer
                .typed::<ByteArrayType>()
                .write_batch(&values, levels.as_deref(), None)?;
        }
        Kind::Int64 | Kind::Time => {
            let (values, levels) = present(rows, j, n, |_, c| {
                Ok(match c {
                    Cell::Int64(v) => Some(*v),
                    Cell::Time(t) => Some(t.timestamp_micros()),
                    _ => None,
                })
            })?;
            writer
                .typed::<Int64Type>()
                .write_batch(&values, levels.as_deref(), None)?;
        }
        Kind::Int32 => {
            let (values, levels) = present(rows, j, n, |_, c| {
                Ok(match c {
                    Cell::Int32(v) => Some(*v),
                    _ => None,
                })
            })?;
            writer
                .typed::<Int32Type>()
                .write_batch(&values, levels.as_deref(), None)?;
        }
        Kind::Bool => {
            let (values, levels) = present(rows, j, n, |_, c| {
                Ok(match c {
                    Cell::Bool(v) => Some(*v),
                    _ => None,
                })
            })?;
            writer
                .typed::<BoolType>()
                .write_batch(&values, levels.as_deref(), None)?;
        }
        Kind::Decimal => {
            let (values, levels) = present(rows, j, n, |i, c| match c {
                Cell::Decimal(d) => {
                    let scaled =
                        decimal_to_i128(*d).ok_or_else(|| ExportError::DecimalOutOfRange {
                            column: column.name,
                            value: *d,
                            tenant_id: keys.get(i).map_or("?", |k| k.0).to_owned(),
                            request_id: keys.get(i).map_or("?", |k| k.1).to_owned(),
                        })?;
                    Ok(Some(FixedLenByteArray::from(scaled.to_be_bytes().to_vec())))
                }
                _ => Ok(None),
            })?;
            writer.typed::<FixedLenByteArrayType>().write_batch(
                &values,
                levels.as_deref(),
                None,
            )?;
        }
        Kind::TextList => {
            // Three-level list: definition 1 for an element, 0 for an empty
            // list; repetition 0 starts a row's list, 1 continues it.
            let (mut values, mut defs, mut reps) = (Vec::new(), Vec::new(), Vec::new());
            for row in rows {
                let items = match row.as_ref().get(j) {
                    Some(Cell::List(items)) => *items,
                    _ => &[],
                };
                if items.is_empty() {
                    defs.push(0);
                    reps.push(0);
                }
                for (k, item) in items.iter().enumerate() {
                    values.push(ByteArray::from(item.as_bytes().to_vec()));
                    defs.push(1);
                    reps.push(i16::from(k > 0));
                }
            }
            writer
                .typed::<ByteArrayType>()
                .write_batch(&values, Some(&defs), Some(&reps))?;
        }
    }
    Ok(())
}
