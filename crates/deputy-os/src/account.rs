//! The account database, read through NSS so that LDAP and SSSD accounts work as well as the
//! ones in `/etc/passwd`.
//!
//! `getpwnam_r(3)`, `getpwuid_r(3)` and `getgrouplist(3)` go through glibc's NSS modules; nix
//! wraps them with the buffer growth they need, so this module holds no `unsafe`.

use std::ffi::CString;
use std::io;
use std::path::PathBuf;

use nix::unistd::User;

use crate::{Gid, Uid};

/// One entry of the account database (`struct passwd`), without the password field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: Uid,
    /// Primary group id.
    pub gid: Gid,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: PathBuf,
}

impl From<User> for Account {
    fn from(user: User) -> Self {
        Account {
            name: user.name,
            uid: Uid::from_raw(user.uid.as_raw()),
            gid: Gid::from_raw(user.gid.as_raw()),
            home: user.dir,
            shell: user.shell,
        }
    }
}

/// `getpwnam_r(3)`: the account called `name`, or `None` when there is none.
///
/// # Errors
/// An error from NSS (for example an unreachable directory service), or `InvalidInput` when the
/// name holds a NUL byte.
pub fn account_by_name(name: &str) -> io::Result<Option<Account>> {
    if name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "user name contains a NUL byte",
        ));
    }
    Ok(User::from_name(name)?.map(Account::from))
}

/// `getpwuid_r(3)`: the account with user id `uid`, or `None` when there is none.
///
/// # Errors
/// An error from NSS.
pub fn account_by_uid(uid: Uid) -> io::Result<Option<Account>> {
    Ok(User::from_uid(nix::unistd::Uid::from_raw(uid.as_raw()))?.map(Account::from))
}

/// `getgrouplist(3)`: every group `name` belongs to, `gid` (its primary group) included.
///
/// # Errors
/// An error from NSS, or `InvalidInput` when the name holds a NUL byte.
pub fn group_list(name: &str, gid: Gid) -> io::Result<Vec<Gid>> {
    let cname = CString::new(name).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "user name contains a NUL byte")
    })?;
    let groups = nix::unistd::getgrouplist(&cname, nix::unistd::Gid::from_raw(gid.as_raw()))?;
    Ok(groups
        .into_iter()
        .map(|g| Gid::from_raw(g.as_raw()))
        .collect())
}

/// `getgrgid_r(3)`: the name of group `gid`, or `None` when the group database has none.
pub fn group_name(gid: Gid) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid.as_raw()))
        .ok()
        .flatten()
        .map(|group| group.name)
}

/// `getgrnam_r(3)`: the id of the group called `name`.
pub fn group_id(name: &str) -> Option<Gid> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|group| Gid::from_raw(group.gid.as_raw()))
}

/// The parts of a shadow entry (`struct spwd`) that decide whether an account may log on.
/// Days count from 1970-01-01; `None` where the field is empty (-1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shadow {
    /// The password hash starts with `!` (`passwd -l`, `usermod -L`).
    pub locked: bool,
    /// `sp_lstchg`: the day of the last password change; `Some(0)` means "change it now".
    pub last_change: Option<i64>,
    /// `sp_max`: days a password stays valid.
    pub max_days: Option<i64>,
    /// `sp_inact`: days after the password expires that the account still accepts a change.
    pub inactive_days: Option<i64>,
    /// `sp_expire`: the day the account expires.
    pub expire: Option<i64>,
}

/// `getspnam_r(3)`: the shadow entry of `name`, or `None` when it has none (a directory service
/// that keeps none, or no such user).
///
/// pam_unix reports a locked account as a plain authentication failure, and Debian's
/// `common-account` turns an expired one into one too; OpenSSH reads the shadow entry itself
/// for the same reason.
///
/// # Errors
/// `EACCES` without the right to read the shadow database (root, or group shadow, has it).
pub fn shadow_entry(name: &str) -> io::Result<Option<Shadow>> {
    let cname = CString::new(name).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "user name contains a NUL byte")
    })?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: an all-zero spwd is a valid value for a plain C struct of integers and pointers.
        let mut entry: libc::spwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::spwd = std::ptr::null_mut();
        // SAFETY: every pointer is live and `buf.len()` is the buffer's real size.
        let rc = unsafe {
            libc::getspnam_r(
                cname.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc == libc::ENOENT || (rc == 0 && result.is_null()) {
            return Ok(None);
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let locked = !entry.sp_pwdp.is_null() && {
            // SAFETY: on success sp_pwdp points to a NUL-terminated string inside `buf`.
            let hash = unsafe { std::ffi::CStr::from_ptr(entry.sp_pwdp) };
            hash.to_bytes().starts_with(b"!")
        };
        // c_long is 32 bits on 32-bit targets; the conversion is not useless there.
        #[allow(clippy::useless_conversion)]
        let day = |value: libc::c_long| (value >= 0).then_some(i64::from(value));
        return Ok(Some(Shadow {
            locked,
            last_change: day(entry.sp_lstchg),
            max_days: day(entry.sp_max),
            inactive_days: day(entry.sp_inact),
            expire: day(entry.sp_expire),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_by_name_and_uid() {
        let by_name = account_by_name("root").unwrap().unwrap();
        assert_eq!(by_name.uid, Uid::ROOT);
        let by_uid = account_by_uid(Uid::ROOT).unwrap().unwrap();
        assert_eq!(by_name, by_uid);
    }

    #[test]
    fn missing_account_is_none() {
        assert_eq!(account_by_name("dpt-no-such-user-x").unwrap(), None);
    }

    #[test]
    fn nul_in_name_is_an_error() {
        assert_eq!(
            account_by_name("a\0b").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn group_list_holds_the_primary_group() {
        let root = account_by_name("root").unwrap().unwrap();
        assert!(group_list("root", root.gid).unwrap().contains(&root.gid));
    }
}
