//! The configuration file: any bytes as `/etc/deputy/deputyd.toml`, through deputyd's own
//! `Config::parse` (TOML, then the semantic checks), and what the daemon derives from a
//! configuration it accepted.

#![no_main]

use std::path::Path;

use deputy_fuzz::config::{Config, ConfigError};
use deputy_fuzz::policy::{Policy, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // deputyd reads the file with read_to_string: text that is not UTF-8 never gets here.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/deputy/deputyd.toml");
    match Config::parse(path, text) {
        Ok(config) => {
            // What the daemon does with an accepted configuration, short of binding sockets.
            let policy = Policy::new(config.clone());
            let _ = policy.rlimits();
            let _ = policy.config().sessions.idle_timeout();
            let _ = policy.config().sessions.grace();
            let target = Target {
                user: "dpt-alice",
                uid: 1000,
            };
            let _ = policy.may_become(target).to_string();
            let _ = policy.may_log_on(1001, target);
            let _ = policy.may_act_without_password(0, target);
            let _ = policy.may_pass_env("LANG");
        }
        Err(err @ ConfigError::Invalid { line, column, .. }) => {
            // `deputyd --check-config` prints it, pointing into the file.
            let lines = text.matches('\n').count() + 1;
            assert!((1..=lines).contains(&line), "line {line} of {lines}: {err}");
            assert!(column >= 1, "column {column}: {err}");
            let _ = err.to_string();
        }
        Err(err @ ConfigError::Read { .. }) => panic!("parse never reads: {err}"),
    }
});
