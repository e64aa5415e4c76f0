//! A small cache in front of NSS for the account lookups every request makes (the peer's name,
//! home and shell; a target's groups).
//!
//! A lookup through glibc reads and parses `/etc/passwd`, and `getgrouplist` walks `/etc/group`
//! and asks every other module in nsswitch.conf (systemd's probes half a dozen directories):
//! tens of system calls per request. The cache answers from memory while
//!
//! - `/etc/passwd`, `/etc/group` and `/etc/nsswitch.conf` are the files they were (same inode,
//!   size and modification time: `useradd`, `usermod`, `vipw` all replace or rewrite them), and
//! - the entry is younger than the time to live ([`set_ttl`], 30 s by default), which bounds
//!   how stale an entry from a directory service (LDAP, SSSD) can be, as nscd's and SSSD's own
//!   caches do.
//!
//! Only accounts that exist are kept, so a new account is seen at once. A time to live of zero
//! turns the cache off.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use deputy_os::account::{self, Account};
use deputy_os::{Gid, Uid};

/// The files whose change drops every entry.
const WATCHED: [&str; 3] = ["/etc/passwd", "/etc/group", "/etc/nsswitch.conf"];

/// More entries than this and the cache starts over (a bound, not an eviction policy: a host
/// with more active accounts than this pays NSS's price, as it would without the cache).
const CAPACITY: usize = 4096;

/// The default time to live.
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// What identifies a version of one watched file; `None` when it is missing.
type FileStamp = Option<(u64, u64, i64, i64)>;

#[derive(Clone)]
struct Entry {
    account: Arc<Account>,
    /// `getgrouplist`'s answer, filled on first use.
    groups: Option<Arc<[Gid]>>,
    at: Instant,
}

struct Cache {
    ttl: Duration,
    stamp: [FileStamp; 3],
    by_uid: HashMap<u32, Entry>,
    by_name: HashMap<String, u32>,
}

static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(|| {
    Mutex::new(Cache {
        ttl: DEFAULT_TTL,
        stamp: [None; 3],
        by_uid: HashMap::new(),
        by_name: HashMap::new(),
    })
});

fn cache() -> MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stamp() -> [FileStamp; 3] {
    WATCHED.map(|path| {
        rustix::fs::stat(path).ok().map(|st| {
            (
                st.st_ino,
                st.st_size as u64,
                st.st_mtime,
                st.st_mtime_nsec as i64,
            )
        })
    })
}

/// Sets how long an entry is trusted (zero: do not cache) and drops every entry.
pub fn set_ttl(ttl: Duration) {
    let mut cache = cache();
    cache.ttl = ttl;
    cache.clear();
}

impl Cache {
    fn clear(&mut self) {
        self.by_uid.clear();
        self.by_name.clear();
    }

    /// Drops everything if a watched file changed; false when caching is off.
    fn validate(&mut self) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let now = stamp();
        if now != self.stamp {
            self.stamp = now;
            self.clear();
        }
        true
    }

    fn fresh(&self, uid: u32) -> Option<&Entry> {
        self.by_uid
            .get(&uid)
            .filter(|entry| entry.at.elapsed() < self.ttl)
    }

    fn insert(&mut self, account: Account) -> Arc<Account> {
        if self.by_uid.len() >= CAPACITY {
            self.clear();
        }
        let account = Arc::new(account);
        let uid = account.uid.as_raw();
        self.by_name.insert(account.name.clone(), uid);
        self.by_uid.insert(
            uid,
            Entry {
                account: account.clone(),
                groups: None,
                at: Instant::now(),
            },
        );
        account
    }
}

/// An account from the cache if `cached` finds a fresh one, else from NSS through `fetch`
/// (without the lock: a slow directory service must not hold up other lookups), kept if no
/// watched file changed meanwhile.
fn lookup(
    cached: impl FnOnce(&Cache) -> Option<Arc<Account>>,
    fetch: impl FnOnce() -> io::Result<Option<Account>>,
) -> io::Result<Option<Arc<Account>>> {
    {
        let mut cache = cache();
        if cache.validate()
            && let Some(account) = cached(&cache)
        {
            return Ok(Some(account));
        }
    }
    let Some(account) = fetch()? else {
        return Ok(None);
    };
    let mut cache = cache();
    Ok(Some(if cache.validate() {
        cache.insert(account)
    } else {
        Arc::new(account)
    }))
}

/// `getpwuid_r`, through the cache.
pub(crate) fn by_uid(uid: Uid) -> io::Result<Option<Arc<Account>>> {
    lookup(
        |cache| Some(cache.fresh(uid.as_raw())?.account.clone()),
        || account::account_by_uid(uid),
    )
}

/// `getpwnam_r`, through the cache.
pub(crate) fn by_name(name: &str) -> io::Result<Option<Arc<Account>>> {
    lookup(
        |cache| {
            let entry = cache.fresh(*cache.by_name.get(name)?)?;
            (entry.account.name == name).then(|| entry.account.clone())
        },
        || account::account_by_name(name),
    )
}

/// `getgrouplist` for `account`, through the cache.
pub(crate) fn groups(account: &Account) -> io::Result<Arc<[Gid]>> {
    let uid = account.uid.as_raw();
    {
        let mut cache = cache();
        if cache.validate()
            && let Some(entry) = cache.fresh(uid)
            && *entry.account == *account
            && let Some(groups) = &entry.groups
        {
            return Ok(groups.clone());
        }
    }
    let groups: Arc<[Gid]> = account::group_list(&account.name, account.gid)?.into();
    let mut cache = cache();
    if cache.validate()
        && let Some(entry) = cache.by_uid.get_mut(&uid)
        && *entry.account == *account
    {
        entry.groups = Some(groups.clone());
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_nss_and_are_shared() {
        let root = Uid::from_raw(0);
        let first = by_uid(root).unwrap().unwrap();
        let second = by_uid(root).unwrap().unwrap();
        assert_eq!(first.name, "root");
        assert_eq!(*first, account::account_by_uid(root).unwrap().unwrap());
        let by_name = by_name("root").unwrap().unwrap();
        assert_eq!(by_name.uid, root);
        assert_eq!(first, second);
        let groups = groups(&first).unwrap();
        assert_eq!(
            &*groups,
            &account::group_list("root", first.gid).unwrap()[..]
        );
    }

    #[test]
    fn unknown_accounts_are_not_kept() {
        assert!(by_name("no-such-user-deputy").unwrap().is_none());
        assert!(!cache().by_name.contains_key("no-such-user-deputy"));
    }
}
