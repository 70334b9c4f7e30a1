//! Container output shipped by agents, kept per task and container on the
//! server's disk: one JSON line per output line, bounded by rotation.

use berth_protocol::{LogBatch, LogLine};
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A log file is rotated when it passes this size; one rotated file is kept.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

pub struct LogStore {
    root: PathBuf,
    lock: Mutex<()>,
}

fn safe(part: &str) -> String {
    part.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl LogStore {
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            lock: Mutex::new(()),
        }
    }

    fn file(&self, task_id: &str, container: &str) -> PathBuf {
        self.root
            .join(safe(task_id))
            .join(format!("{}.log", safe(container)))
    }

    /// Appends a batch; errors are logged, never fatal to the agent stream.
    pub fn append(&self, batch: &LogBatch) {
        let task_id = batch.task_arn.rsplit('/').next().unwrap_or("");
        let path = self.file(task_id, &batch.container);
        let _guard = self.lock.lock();
        if let Err(e) = append_lines(&path, &batch.lines) {
            tracing::warn!(path = %path.display(), error = %e, "cannot store container output");
        }
    }

    /// Lines of a task's container (or of all its containers), oldest first,
    /// at or after `since`.
    pub fn read(
        &self,
        task_id: &str,
        container: Option<&str>,
        since: f64,
    ) -> Vec<(String, LogLine)> {
        let dir = self.root.join(safe(task_id));
        let mut out = vec![];
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return out;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".log"))
            .collect();
        names.sort();
        for name in names {
            let c = name.trim_end_matches(".log").to_string();
            if container.is_some_and(|want| safe(want) != c) {
                continue;
            }
            for p in [dir.join(format!("{name}.1")), dir.join(&name)] {
                let Ok(f) = std::fs::File::open(&p) else {
                    continue;
                };
                for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
                    if let Ok(l) = serde_json::from_str::<LogLine>(&line) {
                        if l.timestamp >= since {
                            out.push((c.clone(), l));
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.1.timestamp.total_cmp(&b.1.timestamp));
        out
    }
}

fn append_lines(path: &Path, lines: &[LogLine]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path)
        .map(|m| m.len() > MAX_FILE_BYTES)
        .unwrap_or(false)
    {
        std::fs::rename(path, path.with_extension("log.1"))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l).map_err(std::io::Error::other)?;
        buf.push(b'\n');
    }
    f.write_all(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_reads_filters_and_rotates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LogStore::new(dir.path().to_path_buf());
        let line = |t: f64, m: &str| LogLine {
            timestamp: t,
            stream: "stdout".into(),
            message: m.into(),
        };
        let batch = |c: &str, lines: Vec<LogLine>| LogBatch {
            task_arn: "arn:aws:ecs:us-east-1:0:task/c/abc".into(),
            container: c.into(),
            lines,
        };
        store.append(&batch("app", vec![line(1.0, "one"), line(3.0, "three")]));
        store.append(&batch("side", vec![line(2.0, "two")]));
        let all: Vec<String> = store
            .read("abc", None, 0.0)
            .into_iter()
            .map(|(_, l)| l.message)
            .collect();
        assert_eq!(all, vec!["one", "two", "three"]);
        assert_eq!(store.read("abc", Some("side"), 0.0).len(), 1);
        assert_eq!(store.read("abc", None, 2.5).len(), 1);
        // Rotation keeps one old file and a fresh one.
        let big = "x".repeat(1024 * 1024);
        for i in 0..10 {
            store.append(&batch("app", vec![line(10.0 + f64::from(i), &big)]));
        }
        let size = std::fs::metadata(dir.path().join("abc/app.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size <= MAX_FILE_BYTES + 2 * 1024 * 1024);
        assert!(dir.path().join("abc/app.log.1").exists());
    }
}
