//! Failed-logon accounting: after too many failures a caller is refused for a while.
//!
//! Failures are counted per (caller, account) and per caller. A caller that fails
//! `max_failures` times for one account within `window` is refused for that account for
//! `lockout`, even with the right password; a caller that fails `max_failures_per_caller` times
//! over all accounts is refused for every account. Keying by caller means one caller cannot
//! lock an account out for everyone else. A success clears the caller's counts for that
//! account.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Who is asking: the local uid from the socket's peer credentials, or a remote address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Caller {
    /// A local process with this uid.
    Uid(u32),
    /// A remote client at this address.
    Remote(String),
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Uid(uid) => write!(f, "uid {uid}"),
            Caller::Remote(address) => write!(f, "{address}"),
        }
    }
}

/// The numbers of the lockout rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures of one caller for one account that trigger a lockout.
    pub max_failures: u32,
    /// Failures of one caller over all accounts that trigger a lockout of that caller.
    pub max_failures_per_caller: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a lockout lasts.
    pub lockout: Duration,
}

impl Default for LockoutPolicy {
    /// 5 failures in 5 minutes lock the caller out of the account for 5 minutes; 20 over all
    /// accounts lock the caller out entirely.
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            max_failures_per_caller: 20,
            window: Duration::from_secs(300),
            lockout: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Account(Caller, String),
    Caller(Caller),
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

/// Entries beyond which stale ones are dropped, so a flood of distinct names stays bounded.
const PRUNE_ABOVE: usize = 4096;

/// The failure book, shared by every logon of a [`super::Logons`].
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    policy: LockoutPolicy,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Ledger {
    pub fn new(policy: LockoutPolicy) -> Self {
        Ledger {
            policy,
            entries: Mutex::default(),
        }
    }

    fn keys(caller: &Caller, user: &str) -> [Key; 2] {
        [
            Key::Account(caller.clone(), user.to_owned()),
            Key::Caller(caller.clone()),
        ]
    }

    /// `Err(until)` while `caller` is locked out of `user`'s account.
    pub fn check(&self, caller: &Caller, user: &str) -> Result<(), SystemTime> {
        let now = Instant::now();
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let until = Self::keys(caller, user)
            .iter()
            .filter_map(|key| entries.get(key)?.locked_until)
            .filter(|until| *until > now)
            .max();
        match until {
            Some(until) => Err(SystemTime::now() + (until - now)),
            None => Ok(()),
        }
    }

    pub fn record_failure(&self, caller: &Caller, user: &str) {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() > PRUNE_ABOVE {
            let window = self.policy.window;
            entries.retain(|_, entry| {
                entry.locked_until.is_some_and(|until| until > now)
                    || entry
                        .failures
                        .back()
                        .is_some_and(|last| now.duration_since(*last) < window)
            });
        }
        let limits = [
            self.policy.max_failures,
            self.policy.max_failures_per_caller,
        ];
        for (key, limit) in Self::keys(caller, user).into_iter().zip(limits) {
            let entry = entries.entry(key).or_default();
            while entry
                .failures
                .front()
                .is_some_and(|first| now.duration_since(*first) >= self.policy.window)
            {
                entry.failures.pop_front();
            }
            entry.failures.push_back(now);
            if entry.failures.len() >= limit as usize {
                entry.locked_until = Some(now + self.policy.lockout);
                entry.failures.clear();
            }
        }
    }

    pub fn record_success(&self, caller: &Caller, user: &str) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for key in Self::keys(caller, user) {
            entries.remove(&key);
        }
    }
}

/// `2026-11-23T09:10:00Z`: a time for an error message, in UTC.
pub(crate) fn utc(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days to civil date (Howard Hinnant's algorithm, for the proleptic Gregorian calendar).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> LockoutPolicy {
        LockoutPolicy {
            max_failures: max,
            max_failures_per_caller: 3 * max,
            window: Duration::from_secs(60),
            lockout: Duration::from_millis(200),
        }
    }

    #[test]
    fn n_failures_lock_that_caller_out_of_that_account_only() {
        let ledger = Ledger::new(policy(3));
        let (mallory, carol) = (Caller::Uid(1001), Caller::Uid(1002));
        for _ in 0..2 {
            ledger.record_failure(&mallory, "alice");
            assert!(ledger.check(&mallory, "alice").is_ok());
        }
        ledger.record_failure(&mallory, "alice");
        let until = ledger.check(&mallory, "alice").unwrap_err();
        assert!(until > SystemTime::now());
        assert!(
            ledger.check(&carol, "alice").is_ok(),
            "another caller is not locked out"
        );
        assert!(
            ledger.check(&mallory, "bob").is_ok(),
            "nor is the caller for another account"
        );
        std::thread::sleep(Duration::from_millis(250));
        assert!(ledger.check(&mallory, "alice").is_ok(), "the lockout ends");
    }

    #[test]
    fn spraying_many_accounts_locks_the_caller() {
        let ledger = Ledger::new(policy(3));
        let mallory = Caller::Remote("192.0.2.1".into());
        for i in 0..9 {
            ledger.record_failure(&mallory, &format!("user{i}"));
        }
        assert!(ledger.check(&mallory, "someone-else").is_err());
    }

    #[test]
    fn success_resets_the_count() {
        let ledger = Ledger::new(policy(2));
        let caller = Caller::Uid(0);
        ledger.record_failure(&caller, "alice");
        ledger.record_success(&caller, "alice");
        ledger.record_failure(&caller, "alice");
        assert!(ledger.check(&caller, "alice").is_ok());
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_424_400)),
            "2026-11-23T09:00:00Z"
        );
        assert_eq!(
            utc(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }
}
