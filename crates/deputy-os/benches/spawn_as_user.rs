//! Spawn-as-user throughput: `deputy::spawn` against `std::process::Command` doing the same
//! credential change in `pre_exec`, both starting `/bin/true` as dpt-alice and waiting for it.
//!
//! Each runs with a small parent and with a 256 MiB one.
//!
//! Run: `cargo bench -p deputy-os --bench spawn_as_user` (as root, after `scripts/setup`).
//! The baseline lives here, not in the `deputy` crate, because `pre_exec` is `unsafe`.
//!
//! Both sides do the same work per start: a fresh environment of five variables, stdio on
//! /dev/null, setsid, setgroups, setresgid, setresuid, exec of /bin/true, wait. deputy also
//! opens the program and the home directory as the user (impersonating) and verifies the drop,
//! which the baseline does not.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use deputy::{SpawnRequest, Token};
use divan::Bencher;

const USER: &str = "dpt-alice";

fn main() {
    if !rustix::process::geteuid().is_root() || Token::for_user(USER).is_err() {
        eprintln!("skipped spawn_as_user: it needs root and the {USER} account (scripts/setup)");
        return;
    }
    divan::main();
}

/// Parent sizes: a small process like this benchmark, and one holding 256 MiB of touched heap,
/// like a daemon with many sessions. `fork` copies page tables, so its cost grows with the
/// parent; a `CLONE_VM` start does not.
const PARENT_MIB: [usize; 2] = [0, 256];

fn ballast(mib: usize) -> Vec<u8> {
    vec![1u8; mib << 20]
}

#[divan::bench(args = PARENT_MIB, sample_count = 400)]
fn deputy_spawn(bencher: Bencher, parent_mib: usize) {
    let _ballast = ballast(parent_mib);
    let alice = Token::for_user(USER).expect("dpt-alice");
    bencher.bench_local(|| {
        let child = deputy::spawn(&alice, SpawnRequest::new("/bin/true")).expect("spawn");
        assert!(child.wait().expect("wait").success());
    });
}

#[divan::bench(args = PARENT_MIB, sample_count = 400)]
fn std_command_pre_exec(bencher: Bencher, parent_mib: usize) {
    let _ballast = ballast(parent_mib);
    let alice = Token::for_user(USER).expect("dpt-alice");
    let (uid, gid, groups) = (alice.uid(), alice.gid(), alice.groups().to_vec());
    let home = alice.home().to_owned();
    let shell = alice.shell().to_owned();
    bencher.bench_local(|| {
        let mut command = Command::new("/bin/true");
        command
            .env_clear()
            .env("HOME", &home)
            .env("USER", USER)
            .env("LOGNAME", USER)
            .env("SHELL", &shell)
            .env("PATH", deputy::USER_PATH)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let groups = groups.clone();
        // SAFETY: the closure makes raw syscalls only (rustix's linux_raw backend) and
        // allocates nothing; it runs in the forked child before exec.
        unsafe {
            command.pre_exec(move || {
                rustix::process::setsid()?;
                rustix::thread::set_thread_groups(&groups)?;
                rustix::thread::set_thread_res_gid(gid, gid, gid)?;
                rustix::thread::set_thread_res_uid(uid, uid, uid)?;
                Ok(())
            });
        }
        let status = command.status().expect("spawn");
        assert!(status.success());
    });
}
