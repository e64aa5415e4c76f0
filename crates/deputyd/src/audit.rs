//! The audit trail: one JSON line per event (logon, logoff, process start and exit, policy
//! denial, bad input), each with the request id that ties a chain of events together. Lines go
//! to the audit file, when one is configured, and to the log. No secret is ever given to it:
//! events are built from names, ids and reasons only.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// What to do when the audit file cannot be written (a full disk, a failing device).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Refuse new logons and process starts until the lines held back are written.
    #[default]
    Refuse,
    /// Go on, and report: lines wait in memory (up to [`BACKLOG_BYTES`]), then are counted
    /// as lost, and the count is written with the first line that gets through.
    Continue,
}

/// Audit lines held in memory while the file cannot take them.
pub const BACKLOG_BYTES: usize = 4 << 20;

/// The file and the lines it still owes.
#[derive(Debug, Default)]
struct Sink {
    file: Option<File>,
    /// Lines (with their newline) not written yet, oldest first.
    backlog: VecDeque<String>,
    backlog_bytes: usize,
    /// Lines dropped because the backlog was full (`continue` only).
    lost: u64,
    /// Why the last write failed, while the backlog is not empty.
    failing: Option<String>,
}

impl Sink {
    /// Writes what is owed; false (with the reason kept) when the file still refuses.
    fn flush(&mut self) -> bool {
        let Some(file) = self.file.as_mut() else {
            return true;
        };
        if self.lost > 0 {
            // Said before the lines that follow the gap (and kept whole like them).
            let line = format!(
                "{}\n",
                json!({"time": now(), "event": "audit_lost", "lines": self.lost})
            );
            self.backlog_bytes += line.len();
            self.backlog.push_front(line);
            self.lost = 0;
        }
        while let Some(line) = self.backlog.front_mut() {
            // A full disk may take part of a line: what was written is dropped from the front,
            // and the rest follows when there is room, so the line ends up whole.
            match file.write(line.as_bytes()) {
                Ok(0) => {
                    self.failing = Some("the file takes no more bytes".into());
                    return false;
                }
                Ok(n) if n < line.len() => {
                    line.drain(..n);
                    self.backlog_bytes -= n;
                }
                Ok(n) => {
                    self.backlog_bytes -= n;
                    self.backlog.pop_front();
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    self.failing = Some(err.to_string());
                    return false;
                }
            }
        }
        self.failing = None;
        true
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Writes audit lines.
#[derive(Debug)]
pub struct Audit {
    sink: Mutex<Sink>,
    on_failure: OnFailure,
    next_request: AtomicU64,
}

impl Audit {
    /// Appends to `path` (created 0600, its directory 0750), or only logs when `None`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>, on_failure: OnFailure) -> std::io::Result<Audit> {
        let file = match path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o750)
                        .create(dir)?;
                }
                Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .mode(0o600)
                        .open(path)?,
                )
            }
            None => None,
        };
        Ok(Audit {
            sink: Mutex::new(Sink {
                file,
                ..Sink::default()
            }),
            on_failure,
            next_request: AtomicU64::new(1),
        })
    }

    /// A new request id: the process id and a counter, unique for the daemon's life.
    pub fn request_id(&self) -> String {
        format!(
            "{}-{}",
            std::process::id(),
            self.next_request.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn sink(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.sink
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `event` with `fields` (an object) for `request`. A line the file refuses waits
    /// in memory, in order, for the next write that works.
    pub fn record(&self, event: &str, request: &str, fields: Value) {
        let mut line = Map::new();
        line.insert("time".into(), json!(now()));
        line.insert("event".into(), json!(event));
        line.insert("request".into(), json!(request));
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let mut text = Value::Object(line).to_string();
        tracing::info!(target: "audit", "{text}");
        let mut sink = self.sink();
        if sink.file.is_none() {
            return;
        }
        // One write per line (one system call; whole unless the disk is full, see flush).
        text.push('\n');
        let was_failing = sink.failing.is_some();
        if sink.backlog_bytes + text.len() > BACKLOG_BYTES {
            // `refuse` stops new work at the first failure, so only the ends of work already
            // under way (or `continue`) fill it: past the bound, lines are counted, and the
            // count is written first when the file takes lines again.
            sink.lost += 1;
        } else {
            sink.backlog_bytes += text.len();
            sink.backlog.push_back(text);
        }
        if !sink.flush() && !was_failing {
            tracing::error!(
                "cannot write the audit log: {}; lines are held in memory ({})",
                sink.failing.as_deref().unwrap_or_default(),
                match self.on_failure {
                    OnFailure::Refuse => "new work is refused until they are written",
                    OnFailure::Continue => "work goes on; beyond 4 MiB they are counted as lost",
                }
            );
        } else if was_failing && sink.failing.is_none() {
            tracing::warn!("the audit log is written again, with every line held back");
        }
    }

    /// Whether new work may start: with `refuse`, only when every line is written (tried
    /// again here). The error says why not.
    pub fn admit(&self) -> Result<(), String> {
        if self.on_failure == OnFailure::Continue {
            return Ok(());
        }
        let mut sink = self.sink();
        if sink.failing.is_none() || sink.flush() {
            return Ok(());
        }
        Err(format!(
            "{}; {} line(s) wait to be written",
            sink.failing.as_deref().unwrap_or_default(),
            sink.backlog.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_event_and_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let audit = Audit::open(Some(&path), OnFailure::Refuse).unwrap();
        let request = audit.request_id();
        audit.record("logon", &request, json!({"user": "dpt-alice", "ok": true}));
        let text = std::fs::read_to_string(&path).unwrap();
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["event"], "logon");
        assert_eq!(line["request"], request.as_str());
        assert_eq!(line["user"], "dpt-alice");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
