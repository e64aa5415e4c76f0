//! Policy: who may do what. Pure functions of the configuration, the caller and the request —
//! no system calls — so every rule is testable without root. Each decision names the rule that
//! made it, which `deputyd --explain` prints.

use std::fmt;

use deputy::Resource;

use crate::config::Config;

/// An answer of the policy, with the rule that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or not.
    pub allowed: bool,
    /// The rule, as `section.key`.
    pub rule: &'static str,
    /// Why, in a sentence a caller can act on.
    pub reason: String,
}

impl Decision {
    fn allow(rule: &'static str, reason: impl Into<String>) -> Self {
        Decision {
            allowed: true,
            rule,
            reason: reason.into(),
        }
    }
    pub fn deny(rule: &'static str, reason: impl Into<String>) -> Self {
        Decision {
            allowed: false,
            rule,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allowed" } else { "denied" };
        write!(f, "{verdict} by {}: {}", self.rule, self.reason)
    }
}

/// A user a request would act as.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Account name.
    pub user: &'a str,
    /// Its uid.
    pub uid: u32,
}

/// The policy, built from the configuration.
#[derive(Clone, Debug)]
pub struct Policy {
    config: Config,
}

impl Policy {
    /// The policy of `config`.
    pub fn new(config: Config) -> Self {
        Policy { config }
    }

    /// The configuration it was made from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// May `target` be logged on (or have processes started as it) at all?
    pub fn may_become(&self, target: Target<'_>) -> Decision {
        let logon = &self.config.logon;
        if logon.deny_users.iter().any(|u| u == target.user) {
            return Decision::deny(
                "logon.deny_users",
                format!("{} is in logon.deny_users", target.user),
            );
        }
        if !logon.allow_users.is_empty() && !logon.allow_users.iter().any(|u| u == target.user) {
            return Decision::deny(
                "logon.allow_users",
                format!("{} is not in logon.allow_users", target.user),
            );
        }
        if target.uid < logon.uid_min {
            return Decision::deny(
                "logon.uid_min",
                format!(
                    "{} (uid {}) is a system account: its uid is below logon.uid_min {}",
                    target.user, target.uid, logon.uid_min
                ),
            );
        }
        Decision::allow(
            "logon.uid_min",
            format!("{} (uid {}) may be logged on", target.user, target.uid),
        )
    }

    /// May `caller` log `target` on with a password?
    pub fn may_log_on(&self, caller: u32, target: Target<'_>) -> Decision {
        let become_ = self.may_become(target);
        if !become_.allowed {
            return become_;
        }
        let callers = &self.config.logon.logon_callers;
        if caller != target.uid && !callers.is_empty() && !callers.contains(&caller) {
            return Decision::deny(
                "logon.logon_callers",
                format!("uid {caller} is not in logon.logon_callers"),
            );
        }
        become_
    }

    /// May `caller` start processes as `target` without a password?
    pub fn may_act_without_password(&self, caller: u32, target: Target<'_>) -> Decision {
        if !self.config.logon.trusted_callers.contains(&caller) {
            return Decision::deny(
                "logon.trusted_callers",
                format!(
                    "uid {caller} is not in logon.trusted_callers: log {} on with a password",
                    target.user
                ),
            );
        }
        self.may_become(target)
    }

    /// May `caller` use, list or end a session that `owner` created?
    pub fn may_use_session(&self, caller: u32, owner: u32) -> Decision {
        if caller == owner {
            Decision::allow("sessions.owner", "the caller created the session")
        } else if caller == 0 {
            Decision::allow("sessions.root", "root may act on every session")
        } else {
            Decision::deny("sessions.owner", "the session belongs to another user")
        }
    }

    /// Whether a caller may pass the environment variable `name`.
    pub fn may_pass_env(&self, name: &str) -> bool {
        self.config
            .environment
            .allow
            .iter()
            .any(|allowed| match allowed.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => allowed == name,
            })
    }

    /// The resource limits every process gets.
    pub fn rlimits(&self) -> Vec<(Resource, u64, u64)> {
        self.config
            .rlimits
            .iter()
            .filter_map(|(name, limit)| Some((resource(name)?, limit.soft, limit.hard)))
            .collect()
    }
}

/// Names of the resource limits, as in `[rlimits]`.
pub const RESOURCE_NAMES: [&str; 16] = [
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The resource limit called `name`.
pub fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "as" => Resource::As,
        "core" => Resource::Core,
        "cpu" => Resource::Cpu,
        "data" => Resource::Data,
        "fsize" => Resource::Fsize,
        "locks" => Resource::Locks,
        "memlock" => Resource::Memlock,
        "msgqueue" => Resource::Msgqueue,
        "nice" => Resource::Nice,
        "nofile" => Resource::Nofile,
        "nproc" => Resource::Nproc,
        "rss" => Resource::Rss,
        "rtprio" => Resource::Rtprio,
        "rttime" => Resource::Rttime,
        "sigpending" => Resource::Sigpending,
        "stack" => Resource::Stack,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Policy {
        Policy::new(Config::parse(std::path::Path::new("t.toml"), toml).unwrap())
    }

    const ALICE: Target<'static> = Target {
        user: "alice",
        uid: 1001,
    };

    #[test]
    fn root_and_system_accounts_are_not_logged_on_by_default() {
        let policy = policy("[logon]\nuid_min = 1000\n");
        let root = policy.may_become(Target {
            user: "root",
            uid: 0,
        });
        assert_eq!((root.allowed, root.rule), (false, "logon.deny_users"));
        let daemon = policy.may_become(Target {
            user: "daemon",
            uid: 1,
        });
        assert_eq!((daemon.allowed, daemon.rule), (false, "logon.uid_min"));
        assert!(policy.may_become(ALICE).allowed);
    }

    #[test]
    fn only_root_acts_without_a_password_by_default() {
        let policy = policy("");
        assert!(policy.may_act_without_password(0, ALICE).allowed);
        let bob = policy.may_act_without_password(1002, ALICE);
        assert_eq!((bob.allowed, bob.rule), (false, "logon.trusted_callers"));
        assert!(
            bob.to_string()
                .starts_with("denied by logon.trusted_callers: uid 1002")
        );
    }

    #[test]
    fn logon_callers_restrict_logging_others_on() {
        let policy = policy("[logon]\nlogon_callers = [0]\n");
        assert!(policy.may_log_on(1001, ALICE).allowed, "yourself, always");
        assert_eq!(policy.may_log_on(1002, ALICE).rule, "logon.logon_callers");
        assert!(policy.may_log_on(0, ALICE).allowed);
    }

    #[test]
    fn sessions_belong_to_their_owner_and_root() {
        let policy = policy("");
        assert!(policy.may_use_session(1001, 1001).allowed);
        assert!(policy.may_use_session(0, 1001).allowed);
        assert!(!policy.may_use_session(1002, 1001).allowed);
    }

    #[test]
    fn the_environment_allowlist_takes_prefixes() {
        let policy = policy("[environment]\nallow = [\"LANG\", \"LC_*\"]\n");
        assert!(policy.may_pass_env("LANG") && policy.may_pass_env("LC_ALL"));
        assert!(!policy.may_pass_env("LANGUAGE") && !policy.may_pass_env("LD_PRELOAD"));
    }

    #[test]
    fn every_resource_name_is_known() {
        for name in RESOURCE_NAMES {
            assert!(resource(name).is_some(), "{name}");
        }
    }
}
