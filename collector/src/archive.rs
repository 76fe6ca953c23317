//! `collector ledger archive --before YYYY-MM`: every month before it that
//! still has a ledger partition is exported in our own Parquet schema
//! (every column, every row), the file is checked against the ledger, and
//! the partition is detached and dropped ([`db::archive_partition`], which
//! re-checks the partition under a lock so a row that arrived after the
//! export fails the archive instead of being lost). Its usage stays in the
//! daily rollups; docs/operations.md has the runbook.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::db;
use crate::export::{self, ExportError, ExportFormat, ExportReport, Job, Period};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveRunError {
    #[error(
        "--before {before} is after the current month {current}: only closed months can be archived"
    )]
    NotClosed { before: Period, current: Period },
    #[error("exporting {period}: {source}")]
    Export {
        period: Period,
        #[source]
        source: ExportError,
    },
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Archive(#[from] db::ArchiveError),
    #[error("listing the ledger's partitions: {0}")]
    Database(#[from] sqlx::Error),
}

/// One month archived.
#[derive(Debug, Clone)]
pub struct Archived {
    pub period: Period,
    pub rows: i64,
    pub cost: BTreeMap<String, Decimal>,
    pub file: PathBuf,
    pub sha256: String,
}

/// Archives every month before `before` still in the ledger, oldest first,
/// writing `ledger-YYYY-MM.parquet` into `dir` (never over an earlier
/// archive's file: a month archived again gets `ledger-YYYY-MM-2.parquet`).
/// Stops at the first month that fails; the months before it stay archived.
pub async fn run(
    pool: &sqlx::PgPool,
    clock: &Clock,
    before: Period,
    dir: &Path,
) -> Result<Vec<Archived>, ArchiveRunError> {
    let current = Period::containing(clock.now());
    if before.start() > current.start() {
        return Err(ArchiveRunError::NotClosed { before, current });
    }
    let mut done = Vec::new();
    for partition in db::ledger_partitions(pool).await? {
        if partition.month >= before.start() {
            continue;
        }
        let period = Period::containing(partition.month);
        let path = free_path(dir, period);
        let job = Job::new(period, ExportFormat::Parquet);
        let report =
            export_to_file(pool, clock, &job, &path)
                .await
                .map_err(|source| match source {
                    ExportFileError::Export(source) => ArchiveRunError::Export { period, source },
                    ExportFileError::File { path, source } => {
                        ArchiveRunError::File { path, source }
                    }
                })?;
        let sha256 = sha256_of(&path).map_err(|source| ArchiveRunError::File {
            path: path.clone(),
            source,
        })?;
        let totals = report.ledger.month_totals();
        let file = db::ArchiveFile {
            format: "parquet".to_owned(),
            path: path.display().to_string(),
            sha256: sha256.clone(),
        };
        db::archive_partition(pool, partition.month, &totals, &file, clock.now()).await?;
        done.push(Archived {
            period,
            rows: totals.rows,
            cost: totals.cost,
            file: path,
            sha256,
        });
    }
    Ok(done)
}

/// `ledger-YYYY-MM.parquet` in `dir`, or the first `-N` variant not taken.
fn free_path(dir: &Path, period: Period) -> PathBuf {
    let first = dir.join(ExportFormat::Parquet.default_file_name(period));
    if !first.exists() {
        return first;
    }
    (2u32..)
        .map(|n| dir.join(format!("ledger-{period}-{n}.parquet")))
        .find(|p| !p.exists())
        .unwrap_or(first)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportFileError {
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs `job` into `output`, written beside it as `.partial` and renamed
/// only once the export is complete and adds up to the ledger, so a failed
/// or interrupted export never leaves a file that looks whole.
pub async fn export_to_file(
    pool: &sqlx::PgPool,
    clock: &Clock,
    job: &Job,
    output: &Path,
) -> Result<ExportReport, ExportFileError> {
    // Refused before touching the database or the file system.
    job.period.ensure_closed(clock.now())?;
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportFileError::File { path, source }
    };
    let file = std::fs::File::create(&partial).map_err(file_error(&partial))?;
    match export::run(pool, clock, job, std::io::BufWriter::new(file)).await {
        Ok((report, out)) => {
            let file = out.into_inner().map_err(|e| ExportFileError::File {
                path: partial.clone(),
                source: e.into_error(),
            })?;
            file.sync_all().map_err(file_error(&partial))?;
            std::fs::rename(&partial, output).map_err(file_error(output))?;
            Ok(report)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e.into())
        }
    }
}

fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_month_archived_again_gets_a_file_of_its_own() {
        let dir = std::env::temp_dir().join(format!("archive-names-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let may = Period::parse("2026-05").unwrap();
        assert_eq!(free_path(&dir, may), dir.join("ledger-2026-05.parquet"));
        std::fs::write(dir.join("ledger-2026-05.parquet"), b"x").unwrap();
        assert_eq!(free_path(&dir, may), dir.join("ledger-2026-05-2.parquet"));
        std::fs::write(dir.join("ledger-2026-05-2.parquet"), b"x").unwrap();
        assert_eq!(free_path(&dir, may), dir.join("ledger-2026-05-3.parquet"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
