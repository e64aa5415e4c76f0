//! The privilege check names what the process lacks, per thread.

#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod common;

use deputy::{CapabilitySet, check_privileges};

#[test]
fn root_here_has_what_logon_and_spawn_need() {
    require_root!();
    let report = check_privileges().unwrap();
    assert!(report.is_sufficient(), "{report}");
    let effective = deputy_os::caps::thread_capabilities().unwrap().effective;
    let sys_resource_missing = report
        .missing_optional
        .iter()
        .any(|p| p.name == "CAP_SYS_RESOURCE");
    assert_eq!(
        sys_resource_missing,
        !effective.contains(CapabilitySet::SYS_RESOURCE)
    );
}

#[test]
fn a_thread_without_cap_kill_and_cap_setuid_is_told_which_it_lacks() {
    require_root!();
    // Capabilities are per thread: drop two on a thread of our own and ask there.
    std::thread::spawn(|| {
        let mut sets = deputy_os::caps::thread_capabilities().unwrap();
        sets.effective -= CapabilitySet::KILL | CapabilitySet::SETUID;
        deputy_os::caps::set_thread_capabilities(sets).unwrap();
        let report = check_privileges().unwrap();
        assert!(!report.is_sufficient());
        let names: Vec<_> = report.missing_required.iter().map(|p| p.name).collect();
        assert_eq!(names, ["CAP_SETUID", "CAP_KILL"]);
        assert!(
            report
                .to_string()
                .contains("missing (required): CAP_KILL (SE_TCB_NAME)"),
            "{report}"
        );
    })
    .join()
    .unwrap();
    assert!(
        check_privileges().unwrap().is_sufficient(),
        "other threads keep theirs"
    );
}
