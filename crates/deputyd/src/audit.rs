//! The audit trail: one JSON line per event (logon, logoff, process start and exit, policy
//! denial, bad input), each with the request id that ties a chain of events together. Lines go
//! to the audit file, when one is configured, and to the log. No secret is ever given to it:
//! events are built from names, ids and reasons only.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

/// Writes audit lines.
#[derive(Debug)]
pub struct Audit {
    file: Mutex<Option<File>>,
    next_request: AtomicU64,
}

impl Audit {
    /// Appends to `path` (created 0600, its directory 0750), or only logs when `None`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>) -> std::io::Result<Audit> {
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
            file: Mutex::new(file),
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

    /// Records `event` with `fields` (an object) for `request`.
    pub fn record(&self, event: &str, request: &str, fields: Value) {
        let mut line = Map::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        line.insert("time".into(), json!(now.as_secs_f64()));
        line.insert("event".into(), json!(event));
        line.insert("request".into(), json!(request));
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let text = Value::Object(line).to_string();
        tracing::info!(target: "audit", "{text}");
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = file.as_mut()
            && let Err(err) = writeln!(file, "{text}")
        {
            tracing::error!("cannot write the audit log: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_json_with_event_and_request() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.jsonl");
        let audit = Audit::open(Some(&path)).unwrap();
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
