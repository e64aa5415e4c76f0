//! What survives the daemon's death: one record per live session in the state directory
//! (`[daemon] state_dir`), each written atomically (a temporary file renamed over the old
//! one), removed when the session ends. A deputyd that starts finds the records its
//! predecessor left and adopts or ends those sessions (`[daemon] on_restart`): see
//! [`crate::daemon`]'s recovery.
//!
//! A record holds ids, users, pids with their start times (so that a reused pid is never
//! mistaken for the process), and what each grant changed, to undo it — for an X11 grant that
//! includes the caller's display cookie, which is why the directory is root's alone (0700) and
//! each record 0600.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One session, as its record says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The session's id.
    pub id: String,
    /// `peer`, `trusted`, or the logon type.
    pub kind: String,
    /// The user its processes run as.
    pub user: String,
    /// That user's uid.
    pub uid: u32,
    /// The uid that created it.
    pub owner: u32,
    /// Outlives its last process.
    pub keep: bool,
    /// Seconds since 1970 of its creation.
    pub created: u64,
    /// Its running processes.
    pub processes: Vec<Process>,
    /// Its grants, with what it takes to revoke them.
    pub grants: Vec<GrantRecord>,
}

/// A process: its pid, and when it started, in clock ticks since boot (readings just before
/// and after its start; with the pid, they name one process: a pid reused since started
/// later).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Its pid.
    pub pid: i32,
    /// It started no earlier than this.
    pub started_after: u64,
    /// It started no later than this.
    pub started_before: u64,
}

/// A grant as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GrantRecord {
    /// ACL entries: the inodes changed and what they held before.
    Acl(deputy::grant::AclRecord),
    /// A ticket cache deputy made, destroyed as its owner.
    Tickets {
        /// The cache file.
        path: PathBuf,
        /// The user it belongs to.
        owner: String,
    },
    /// A display's host access list entry, with the caller's uid and cookie (revoking it
    /// means connecting to the display as the caller did): the one secret a record holds, in
    /// a directory only root may read, for no longer than the grant.
    X11(deputy::grant::X11Record),
}

impl GrantRecord {
    /// How ListSessions and the audit log name it.
    pub fn describe(&self) -> String {
        match self {
            GrantRecord::Acl(acl) => format!("acl {}", acl.path.display()),
            GrantRecord::Tickets { path, .. } => format!("krb5 FILE:{}", path.display()),
            GrantRecord::X11(x11) => format!("x11 {} SI:localuser:{}", x11.display, x11.user),
        }
    }

    /// Undoes the grant.
    ///
    /// # Errors
    /// Why it could not be undone.
    pub fn revoke(self) -> Result<(), String> {
        match self {
            GrantRecord::Acl(acl) => acl.revoke().map_err(|e| e.to_string()),
            GrantRecord::Tickets { path, owner } => {
                let owner = deputy::Token::for_user(&owner).map_err(|e| e.to_string())?;
                // Destroyed (zeroed, removed, as the owner) when dropped.
                drop(deputy::tickets::TicketCache::adopt(path, owner));
                Ok(())
            }
            GrantRecord::X11(x11) => x11.revoke().map_err(|e| e.to_string()),
        }
    }
}

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The directory `dir`, created 0700 if absent; missing directories above it are created
    /// as `mkdir -p` would (0777 less the umask), not 0700: the default `dir` is beside the
    /// socket, and a socket directory only root can enter would shut every other user out.
    ///
    /// # Errors
    /// When it cannot be created, or others may write to it.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent)?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(err) if err.kind() != std::io::ErrorKind::AlreadyExists => return Err(err),
            _ => {}
        }
        let meta = std::fs::symlink_metadata(dir)?;
        use std::os::unix::fs::MetadataExt;
        if !meta.is_dir()
            || meta.mode() & 0o022 != 0
            || meta.uid() != rustix::process::geteuid().as_raw()
        {
            return Err(std::io::Error::other(format!(
                "{} must be a directory of deputyd's own that no one else may write",
                dir.display()
            )));
        }
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// Writes `record` in place of the session's last one, atomically.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, record: &Record) -> std::io::Result<()> {
        let path = self.path(&record.id);
        let temporary = self.dir.join(format!(".{}.json.new", record.id));
        let bytes = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&temporary)?;
        file.write_all(&bytes)?;
        drop(file);
        std::fs::rename(&temporary, &path)
    }

    /// Removes the session's record.
    ///
    /// # Errors
    /// When the file exists and cannot be removed.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Every record in the directory; those that do not parse are named with the reason (and
    /// removed: they would be found at every start).
    pub fn load_all(&self) -> (Vec<Record>, Vec<String>) {
        let (mut records, mut errors) = (Vec::new(), Vec::new());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (records, errors);
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                // A write cut short by the daemon's death: the record it replaced stands.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    // Where it broke, not what it found there: a record may hold a cookie.
                    serde_json::from_slice::<Record>(&bytes).map_err(|e| {
                        format!(
                            "{:?} error at line {}, column {}",
                            e.classify(),
                            e.line(),
                            e.column()
                        )
                    })
                }) {
                Ok(record) => records.push(record),
                Err(reason) => {
                    errors.push(format!("{}: {reason}", path.display()));
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        (records, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_replaced_whole_and_removed() {
        let dir = std::env::temp_dir().join(format!("deputyd-state-{}", std::process::id()));
        let store = Store::open(&dir).unwrap();
        let mut record = Record {
            id: "0123456789abcdef0123456789abcdef".into(),
            kind: "peer".into(),
            user: "someone".into(),
            uid: 1001,
            owner: 1001,
            keep: false,
            created: 1,
            processes: vec![Process {
                pid: 42,
                started_after: 7,
                started_before: 8,
            }],
            grants: vec![GrantRecord::Tickets {
                path: "/tmp/krb5cc_1001_deputy_00".into(),
                owner: "someone".into(),
            }],
        };
        store.save(&record).unwrap();
        record.processes.clear();
        store.save(&record).unwrap();
        std::fs::write(dir.join("broken.json"), b"{").unwrap();
        std::fs::write(dir.join(".cut-short.json.new"), b"{").unwrap();
        let (records, errors) = store.load_all();
        assert_eq!(records, vec![record.clone()]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("broken.json"), "{errors:?}");
        store.remove(&record.id).unwrap();
        store.remove(&record.id).unwrap();
        assert_eq!(store.load_all(), (Vec::new(), Vec::new()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Under socket activation deputyd binds nothing, and its state directory (by default
    /// beside the socket) may be the first thing made in /run/deputy: that directory must come
    /// out as any other, or no one but root could reach the socket systemd puts there.
    #[test]
    fn the_directories_above_the_store_are_made_as_mkdir_would() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("deputyd-state-up-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let socket_dir = base.join("run").join("deputy");
        Store::open(&socket_dir.join("sessions")).unwrap();
        let plain = base.join("plain");
        std::fs::create_dir(&plain).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&socket_dir), mode(&plain), "the socket's directory");
        assert_eq!(mode(&base.join("run")), mode(&plain));
        assert_eq!(mode(&socket_dir.join("sessions")), 0o700, "the store");
        // An existing store is opened as it is.
        Store::open(&socket_dir.join("sessions")).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
    }
}
