//! Does this process hold what logon and spawn need? The Linux side of `SE_TCB_NAME`,
//! `SE_ASSIGNPRIMARYTOKEN_NAME` and `SE_INCREASE_QUOTA_NAME`.
//!
//! Root on Linux is a set of capabilities, and a root process can lack some (a container, a
//! systemd unit with `CapabilityBoundingSet=`; root on the project's CI machines lacks
//! `CAP_SYS_RESOURCE`). [`check_privileges`] names each missing one, split into those without
//! which deputy cannot do its job and those that only narrow what it can do.

use std::fmt;
use std::io;

use deputy_os::caps::{self, CapabilitySet};

/// One capability deputy uses, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privilege {
    /// The capability's name, e.g. `CAP_SETUID`.
    pub name: &'static str,
    /// The Windows privilege it stands in for.
    pub windows: &'static str,
    /// What deputy does with it.
    pub purpose: &'static str,
    /// Without it deputy cannot do its job (otherwise it only does less).
    pub required: bool,
    set: CapabilitySet,
}

/// Every capability deputy uses, in the order they are reported.
pub const PRIVILEGES: &[Privilege] = &[
    Privilege {
        name: "CAP_SETUID",
        windows: "SE_ASSIGNPRIMARYTOKEN_NAME",
        purpose: "start processes as another user and impersonate clients (setresuid, setfsuid)",
        required: true,
        set: CapabilitySet::SETUID,
    },
    Privilege {
        name: "CAP_SETGID",
        windows: "SE_ASSIGNPRIMARYTOKEN_NAME",
        purpose: "give processes the user's groups (setgroups, setresgid, setfsgid)",
        required: true,
        set: CapabilitySet::SETGID,
    },
    Privilege {
        name: "CAP_DAC_READ_SEARCH",
        windows: "SE_TCB_NAME",
        purpose: "read the shadow database to log users on (pam_unix)",
        required: true,
        set: CapabilitySet::DAC_READ_SEARCH,
    },
    Privilege {
        name: "CAP_AUDIT_WRITE",
        windows: "SE_TCB_NAME",
        purpose: "write the kernel audit records of logons (pam_loginuid, pam_unix)",
        required: true,
        set: CapabilitySet::AUDIT_WRITE,
    },
    Privilege {
        name: "CAP_CHOWN",
        windows: "SE_TCB_NAME",
        purpose: "give a terminal to the logon session (chown of the pty follower)",
        required: true,
        set: CapabilitySet::CHOWN,
    },
    Privilege {
        name: "CAP_FOWNER",
        windows: "SE_TCB_NAME",
        purpose: "grant and revoke access to display sockets (POSIX ACLs)",
        required: true,
        set: CapabilitySet::FOWNER,
    },
    Privilege {
        name: "CAP_KILL",
        windows: "SE_TCB_NAME",
        purpose: "signal and end the processes of other users' sessions",
        required: true,
        set: CapabilitySet::KILL,
    },
    Privilege {
        name: "CAP_SYS_RESOURCE",
        windows: "SE_INCREASE_QUOTA_NAME",
        purpose: "raise resource limits above the daemon's own hard limits (without it they can only be lowered)",
        required: false,
        set: CapabilitySet::SYS_RESOURCE,
    },
];

/// What [`check_privileges`] found missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivilegeReport {
    /// Missing capabilities without which logon or spawn cannot work.
    pub missing_required: Vec<Privilege>,
    /// Missing capabilities that only narrow what deputy can do: warnings.
    pub missing_optional: Vec<Privilege>,
}

impl PrivilegeReport {
    /// True when nothing required is missing.
    pub fn is_sufficient(&self) -> bool {
        self.missing_required.is_empty()
    }
}

impl fmt::Display for PrivilegeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.missing_required.is_empty() && self.missing_optional.is_empty() {
            return f.write_str("every capability deputy uses is present");
        }
        for (label, list) in [
            ("missing (required)", &self.missing_required),
            ("missing (optional)", &self.missing_optional),
        ] {
            for p in list {
                writeln!(
                    f,
                    "{label}: {} ({}): needed to {}",
                    p.name, p.windows, p.purpose
                )?;
            }
        }
        Ok(())
    }
}

/// Checks the calling thread's effective capabilities against [`PRIVILEGES`].
///
/// # Errors
/// Only when `capget(2)` fails.
///
/// # Example
/// ```
/// let report = deputy::check_privileges()?;
/// if !report.is_sufficient() {
///     eprintln!("deputy cannot run here:\n{report}");
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn check_privileges() -> io::Result<PrivilegeReport> {
    Ok(check_capabilities(caps::thread_capabilities()?.effective))
}

/// [`check_privileges`] for a given effective set.
pub fn check_capabilities(effective: CapabilitySet) -> PrivilegeReport {
    let (missing_required, missing_optional) = PRIVILEGES
        .iter()
        .filter(|p| !effective.contains(p.set))
        .partition(|p| p.required);
    PrivilegeReport {
        missing_required,
        missing_optional,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_set_misses_nothing() {
        assert_eq!(
            check_capabilities(CapabilitySet::all()),
            PrivilegeReport::default()
        );
    }

    #[test]
    fn sys_resource_alone_is_a_warning() {
        let report = check_capabilities(CapabilitySet::all() - CapabilitySet::SYS_RESOURCE);
        assert!(report.is_sufficient());
        assert_eq!(
            report
                .missing_optional
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>(),
            ["CAP_SYS_RESOURCE"]
        );
    }

    #[test]
    fn an_empty_set_names_every_required_capability() {
        let report = check_capabilities(CapabilitySet::empty());
        assert!(!report.is_sufficient());
        assert_eq!(
            report.missing_required.len(),
            PRIVILEGES.iter().filter(|p| p.required).count()
        );
        assert!(
            report
                .to_string()
                .contains("missing (required): CAP_SETUID (SE_ASSIGNPRIMARYTOKEN_NAME)")
        );
    }
}
