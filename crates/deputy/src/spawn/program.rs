//! Finding and opening the program and the working directory *as the client*.
//!
//! Everything here runs while the calling thread impersonates the target user, so every path
//! lookup and permission check is the kernel's, made with the user's rights. The results are
//! open file descriptors: the child executes the opened file (`execveat(fd, "", AT_EMPTY_PATH)`)
//! and enters the opened directory (`fchdir`), so renaming or replacing a path after these checks
//! changes nothing.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use deputy_os::exec::access_fd;
use rustix::fs::{Access, CWD, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::SpawnError;

/// An opened, checked executable.
#[derive(Debug)]
pub(crate) struct Program {
    pub fd: OwnedFd,
    pub path: PathBuf,
    pub is_script: bool,
}

/// Opens `dir` as a working directory and checks that it may be entered.
pub(crate) fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    let fd = rustix::fs::openat(
        CWD,
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    access_fd(borrow(&fd), Access::EXEC_OK)?;
    Ok(fd)
}

/// Finds `program` the way `execvp(3)` does — a name with a slash is a path (relative to
/// `cwd`), any other name is looked up in `search_path` — and opens it.
pub(crate) fn open_program(
    program: &OsStr,
    search_path: &OsStr,
    cwd: BorrowedFd<'_>,
    user: &str,
) -> Result<Program, SpawnError> {
    if program.as_bytes().contains(&b'/') {
        let path = PathBuf::from(program);
        return open_candidate(cwd, &path).map_err(|source| not_accessible(path, user, source));
    }
    // execvp's rule: a directory we may not search, or a file we may not run, is remembered
    // and the search goes on; if nothing else is found, that is the error.
    let mut denied: Option<(PathBuf, io::Error)> = None;
    for dir in search_path.as_bytes().split(|b| *b == b':') {
        // Relative entries (including the empty one, meaning ".") would depend on the
        // daemon's working directory: skip them.
        if !dir.starts_with(b"/") {
            continue;
        }
        let candidate = Path::new(OsStr::from_bytes(dir)).join(program);
        match open_candidate(CWD, &candidate) {
            Ok(found) => return Ok(found),
            Err(err) if err.raw_os_error() == Some(Errno::ACCESS.raw_os_error()) => {
                denied.get_or_insert((candidate, err));
            }
            Err(_) => {}
        }
    }
    match denied {
        Some((path, source)) => Err(not_accessible(path, user, source)),
        None => Err(SpawnError::ProgramNotFound {
            program: program.to_owned(),
            user: user.to_owned(),
            search_path: OsString::from(search_path),
        }),
    }
}

/// Opens one candidate: a regular file the user may execute.
fn open_candidate(dir: BorrowedFd<'_>, path: &Path) -> io::Result<Program> {
    // Read access lets us look for "#!"; an execute-only file is opened O_PATH instead.
    // O_NONBLOCK keeps a FIFO planted at the path from blocking the open.
    let readable = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let (fd, is_readable) = match rustix::fs::openat(dir, path, readable, Mode::empty()) {
        Ok(fd) => (fd, true),
        Err(err) if err == Errno::ACCESS => (
            rustix::fs::openat(dir, path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())?,
            false,
        ),
        Err(err) => return Err(err.into()),
    };
    let stat = rustix::fs::fstat(&fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(Errno::ACCESS.into());
    }
    access_fd(borrow(&fd), Access::EXEC_OK)?;
    let mut head = [0u8; 2];
    let is_script =
        is_readable && matches!(rustix::io::pread(&fd, &mut head, 0), Ok(2)) && head == *b"#!";
    Ok(Program {
        fd,
        path: path.to_owned(),
        is_script,
    })
}

fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

fn not_accessible(path: PathBuf, user: &str, source: io::Error) -> SpawnError {
    SpawnError::ProgramNotAccessible {
        path,
        user: user.to_owned(),
        source,
    }
}
