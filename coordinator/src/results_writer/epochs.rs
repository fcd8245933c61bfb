//! The epoch rows' way into `epochs/part-<first>-<last>.parquet`: buffered in sequence order,
//! written in batches (see [`results_format::layout`] for the naming and why it makes a crash lose
//! nothing and write nothing twice).

use proto::TrialId;
use results_format::layout::{part_range, ResultsDir};
use results_format::{write, EpochRecord, Error, Result};
use std::collections::HashSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Buffers epoch rows and writes them in batches to `<dir>/epochs/part-<first>-<last>.parquet`.
///
/// Rows come with their sequence number in the coordinator's state and must be pushed in
/// sequence order. The caller drives time: it asks [`EpochWriter::should_flush`] and calls
/// [`EpochWriter::flush`]. A row already covered by a part file, or whose (trial, epoch) was
/// taken before, is dropped, so the files never hold a duplicate.
#[derive(Debug)]
pub struct EpochWriter {
    dir: ResultsDir,
    flush_rows: usize,
    flush_interval: Duration,
    buffer: Vec<(u64, EpochRecord)>,
    seen: HashSet<(TrialId, u32)>,
    /// Rows with a smaller sequence number are in part files already.
    next_seq: u64,
    last_flush: Instant,
    rows_written: u64,
}

impl EpochWriter {
    /// Creates `<dir>/epochs/` and finds the rows its part files already hold (see
    /// [`EpochWriter::next_seq`]); leftover temporary files of a crashed write are removed.
    pub fn create(
        dir: &ResultsDir,
        flush_rows: usize,
        flush_interval: Duration,
        now: Instant,
    ) -> Result<Self> {
        let epochs_dir = dir.epochs();
        fs::create_dir_all(&epochs_dir).map_err(Error::io("creating", &epochs_dir))?;
        let mut next_seq = 0;
        for entry in fs::read_dir(&epochs_dir).map_err(Error::io("reading", &epochs_dir))? {
            let entry = entry.map_err(Error::io("reading", &epochs_dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if stdx::fs::is_temp_name(name) {
                let _ = fs::remove_file(entry.path());
            } else if let Some((_, last)) = part_range(name) {
                next_seq = next_seq.max(last + 1);
            }
        }
        Ok(EpochWriter {
            dir: dir.clone(),
            flush_rows: flush_rows.max(1),
            flush_interval,
            buffer: Vec::new(),
            seen: HashSet::new(),
            next_seq,
            last_flush: now,
            rows_written: 0,
        })
    }

    /// The first sequence number no part file holds: rows from here on must be pushed again.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Buffers `row`; false (and nothing buffered) when a part file holds it already or this
    /// (trial, epoch) was taken before.
    pub fn push(&mut self, seq: u64, row: EpochRecord) -> bool {
        let pending = self.buffer.last().map_or(self.next_seq, |(s, _)| s + 1);
        if seq < pending || !self.seen.insert((row.trial_id.clone(), row.metrics.epoch)) {
            return false;
        }
        self.buffer.push((seq, row));
        true
    }

    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Rows are waiting and either there are `flush_rows` of them or `flush_interval` passed
    /// since the last flush.
    pub fn should_flush(&self, now: Instant) -> bool {
        !self.buffer.is_empty()
            && (self.buffer.len() >= self.flush_rows
                || now.saturating_duration_since(self.last_flush) >= self.flush_interval)
    }

    /// Writes every buffered row to a new part file and returns its path (`None` when nothing
    /// was buffered). On error the rows stay buffered for the next try.
    pub fn flush(&mut self, now: Instant) -> Result<Option<PathBuf>> {
        self.last_flush = now;
        if self.buffer.is_empty() {
            return Ok(None);
        }
        let first = self.buffer[0].0;
        let last = self.buffer[self.buffer.len() - 1].0;
        let rows: Vec<EpochRecord> = self.buffer.iter().map(|(_, r)| r.clone()).collect();
        let path = write::write_epoch_part(&self.dir, first, last, &rows)?;
        self.next_seq = last + 1;
        self.rows_written += self.buffer.len() as u64;
        self.buffer.clear();
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::{LeaseOutcome, ReportOutcome, Scheduler, SchedulerConfig, WorkerInfo};
    use crate::trial::TrialSpec;
    use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, TimeUnit};
    use chrono::Utc;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use proto::{Arch, EpochMetrics, Hyperparams};
    use results_format::layout::{EPOCHS_DIR, TRIALS_FILE};
    use results_format::write::write_trials;
    use results_format::{schema, TrialRecord};
    use std::collections::HashMap;
    use std::fs::File;
    use std::path::Path;

    fn hp(arch: Arch, hidden: u32, epochs: u32, validation: f64) -> Hyperparams {
        Hyperparams {
            arch,
            hidden,
            epochs,
            validation,
            ..Hyperparams::default()
        }
    }

    fn metrics(epoch: u32, val_acc: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: 1.0 / f64::from(epoch),
            train_acc: 0.5,
            val_loss: if val_acc.is_nan() { f64::NAN } else { 0.3 },
            val_acc,
            test_loss: 0.4,
            test_acc: 0.6,
            seconds: 2.0,
        }
    }

    /// Runs a small sweep through the scheduler and the writer: trial 0 (ffv0, validation) and
    /// trial 1 (cnn, no validation) finish, trial 2 stays queued. Flushes after every `per_flush` rows.
    fn run_sweep(dir: &Path, per_flush: usize) -> (Vec<TrialRecord>, usize) {
        let dir = &ResultsDir::new(dir);
        let t0 = Instant::now();
        let trials = [
            hp(Arch::Ffv0, 32, 3, 0.1),
            hp(Arch::Cnn, 8, 2, 0.0),
            hp(Arch::Ffv1, 16, 2, 0.1),
        ];
        let mut s = Scheduler::new(
            trials
                .iter()
                .map(|h| TrialSpec::new("e", h.clone()))
                .collect(),
            SchedulerConfig::default(),
            t0,
            Utc::now(),
        );
        let mut writer =
            EpochWriter::create(dir, per_flush, Duration::from_secs(3600), t0).unwrap();
        let w = s.register(
            WorkerInfo {
                name: "host:1".into(),
                device: "cpu".into(),
                slots: 1,
                ..Default::default()
            },
            t0,
        );
        let mut files = 0;
        let mut seq = 0;
        for _ in 0..2 {
            let LeaseOutcome::Lease(l) = s.lease(&w, t0).unwrap() else {
                panic!("expected a lease")
            };
            for epoch in 1..=l.hparams.epochs {
                let val = if l.hparams.validation > 0.0 {
                    0.7 + f64::from(epoch) / 100.0
                } else {
                    f64::NAN
                };
                // Every epoch reported twice: the repeat must not reach the files.
                for _ in 0..2 {
                    if let ReportOutcome::Accepted(r) = s
                        .report_epoch(&w, &l.trial_id, l.attempt, metrics(epoch, val), Some(2), t0)
                        .unwrap()
                    {
                        assert!(writer.push(seq, *r));
                        seq += 1;
                    }
                }
                if writer.should_flush(t0) {
                    files += usize::from(writer.flush(t0).unwrap().is_some());
                    write_trials(dir, &s.records()).unwrap();
                }
            }
            s.finish(&w, &l.trial_id, l.attempt, t0).unwrap();
        }
        files += usize::from(writer.flush(t0).unwrap().is_some());
        assert!(
            writer.flush(t0).unwrap().is_none(),
            "an empty buffer writes no file"
        );
        write_trials(dir, &s.records()).unwrap();
        assert_eq!(writer.rows_written(), 5);
        (s.records(), files)
    }

    fn read(path: &Path) -> Vec<RecordBatch> {
        let file = File::open(path).unwrap();
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    fn parquet_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn epoch_batches_read_back_typed_and_without_duplicates() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, files) = run_sweep(tmp.path(), 2);
        let parts = parquet_files(&tmp.path().join(EPOCHS_DIR));
        assert_eq!(parts.len(), files);
        assert_eq!(files, 3, "5 rows in batches of 2");
        let mut keys = HashSet::new();
        let mut null_vals = 0;
        for part in &parts {
            let name = part.file_name().unwrap().to_str().unwrap();
            assert!(
                name.starts_with("part-") && name.ends_with(".parquet"),
                "{name}"
            );
            for batch in read(part) {
                assert_eq!(batch.schema().fields(), schema::epochs().fields());
                let schema = batch.schema();
                let ty = |n: &str| schema.field_with_name(n).unwrap().data_type().clone();
                assert_eq!(
                    ty("recorded_at"),
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
                );
                assert_eq!(ty("val_acc"), DataType::Float64);
                assert_eq!(ty("seed"), DataType::UInt64);
                let ids = batch
                    .column_by_name("trial_id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                let epochs = batch
                    .column_by_name("epoch")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap();
                let val = batch
                    .column_by_name("val_acc")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<Float64Array>()
                    .unwrap();
                null_vals += val.null_count();
                for i in 0..batch.num_rows() {
                    assert!(
                        keys.insert((ids.value(i).to_owned(), epochs.value(i))),
                        "duplicate row"
                    );
                }
            }
        }
        assert_eq!(keys.len(), 5);
        assert_eq!(null_vals, 2, "the cnn trial has no validation split");
        let leftovers: Vec<_> = parts
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn trials_file_has_one_typed_row_per_trial() {
        let tmp = tempfile::tempdir().unwrap();
        let (records, _) = run_sweep(tmp.path(), 100);
        assert_eq!(
            parquet_files(tmp.path())
                .iter()
                .filter(|p| p.is_file())
                .count(),
            1,
            "no temp file left"
        );
        let batches = read(&tmp.path().join(TRIALS_FILE));
        let batch = arrow::compute::concat_batches(&schema::trials(), &batches).unwrap();
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema().fields(), schema::trials().fields());
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let status = col("status");
        let status = status.as_any().downcast_ref::<StringArray>().unwrap();
        let statuses: Vec<&str> = (0..3).map(|i| status.value(i)).collect();
        assert_eq!(statuses, ["finished", "finished", "queued"]);
        let started = col("started_at");
        assert_eq!(started.null_count(), 1, "the queued trial never started");
        let best = col("best_epoch");
        let best = best.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(best.value(0), 3);
        assert_eq!(records[0].best.map(|b| b.epoch), Some(3));
        let by = col("best_by");
        let by = by.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((by.value(0), by.value(1)), ("val_acc", "test_acc"));
        assert!(by.is_null(2));
    }

    #[test]
    fn should_flush_by_rows_or_time() {
        let tmp = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let dir = ResultsDir::new(tmp.path());
        let mut w = EpochWriter::create(&dir, 3, Duration::from_secs(10), t0).unwrap();
        let h = Hyperparams::default();
        let row = |epoch| EpochRecord {
            trial_id: h.trial_id(),
            experiment: "e".into(),
            hparams: h.clone(),
            metrics: metrics(epoch, 0.5),
            worker: "w".into(),
            device: "cpu".into(),
            recorded_at: Utc::now(),
            device_name: String::new(),
            host: String::new(),
            gpu_peak_memory_bytes: None,
            threads: None,
        };
        assert!(
            !w.should_flush(t0 + Duration::from_secs(60)),
            "nothing buffered"
        );
        assert!(w.push(0, row(1)));
        assert!(!w.push(1, row(1)), "a (trial, epoch) is taken once");
        assert!(!w.should_flush(t0 + Duration::from_secs(9)));
        assert!(w.should_flush(t0 + Duration::from_secs(10)));
        w.push(2, row(2));
        w.push(3, row(3));
        assert!(w.should_flush(t0));
        let first = w.flush(t0).unwrap().unwrap();
        assert_eq!(w.buffered(), 0);
        // A crashed write leaves a temp file: the next writer removes it.
        std::fs::write(tmp.path().join("epochs/.part-x.parquet.tmp"), b"half").unwrap();
        // A new writer on the same folder knows which rows the parts hold already.
        let mut w2 = EpochWriter::create(&dir, 3, Duration::from_secs(10), t0).unwrap();
        assert_eq!(w2.next_seq(), 4);
        assert!(!tmp.path().join("epochs/.part-x.parquet.tmp").exists());
        assert!(!w2.push(3, row(3)), "row 3 is in a part already");
        assert!(w2.push(4, row(4)));
        let second = w2.flush(t0).unwrap().unwrap();
        let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_owned();
        assert_eq!(name(&first), "part-000000000000-000000000003.parquet");
        assert_eq!(name(&second), "part-000000000004-000000000004.parquet");
        assert_eq!(part_range(&name(&second)), Some((4, 4)));
        assert_eq!(part_range("part-000000-1700000000000.parquet"), None);
    }

    fn find_duckdb() -> Option<PathBuf> {
        let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/venv/bin/duckdb");
        if local.is_file() {
            return Some(local);
        }
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("duckdb"))
            .find(|p| p.is_file())
    }

    fn duckdb(bin: &Path, sql: &str) -> String {
        let out = std::process::Command::new(bin)
            .args(["-csv", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "duckdb failed on {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn duckdb_reads_the_results() {
        let Some(bin) = find_duckdb() else {
            println!("skipped: duckdb not found");
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        run_sweep(tmp.path(), 2);
        let dir = tmp.path().display();
        let out = duckdb(
            &bin,
            &format!("SELECT arch, coalesce(CAST(max(val_acc) AS VARCHAR), 'null') AS best, count(*) AS n FROM '{dir}/epochs/*.parquet' GROUP BY arch ORDER BY arch"),
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, ["arch,best,n", "cnn,null,2", "ffv0,0.73,3"], "{out}");
        let out = duckdb(
            &bin,
            &format!("DESCRIBE SELECT * FROM '{dir}/trials.parquet'"),
        );
        let types: HashMap<&str, &str> = out
            .lines()
            .skip(1)
            .filter_map(|l| {
                let mut cols = l.split(',');
                Some((cols.next()?, cols.next()?))
            })
            .collect();
        assert_eq!(
            types.get("started_at"),
            Some(&"TIMESTAMP WITH TIME ZONE"),
            "{out}"
        );
        assert_eq!(types.get("best_val_acc"), Some(&"DOUBLE"), "{out}");
        assert_eq!(types.get("hidden"), Some(&"BIGINT"), "{out}");
        assert_eq!(types.get("seed"), Some(&"UBIGINT"), "{out}");
        assert_eq!(types.get("status"), Some(&"VARCHAR"), "{out}");
        let out = duckdb(&bin, &format!("SELECT count(*) FROM (SELECT DISTINCT trial_id, epoch FROM '{dir}/epochs/*.parquet')"));
        assert_eq!(out.lines().nth(1), Some("5"), "{out}");
    }
}
