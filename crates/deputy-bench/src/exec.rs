//! A minimal hyperfine for commands that need something on their standard input (hyperfine
//! 1.15, Debian 12's, gives every command `/dev/null`): runs a command `runs` times after
//! `warmup` untimed runs, stdin from a file, stdout and stderr to `/dev/null`, and writes the
//! times in hyperfine's JSON shape (`results[0].times`, seconds), so the report reads both
//! alike. Timing is wall clock around `spawn` + `wait`, as hyperfine's with `--shell=none`.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::stats::Samples;

/// Runs `argv` as described above.
///
/// # Errors
/// When the stdin file cannot be opened, the command cannot start, or it exits non-zero
/// (the first failure ends the run, as in hyperfine).
pub fn run(
    name: &str,
    argv: &[String],
    stdin: Option<&Path>,
    runs: usize,
    warmup: usize,
) -> Result<serde_json::Value, String> {
    let (program, args) = argv.split_first().ok_or("no command given")?;
    let mut samples = Samples::default();
    for i in 0..warmup + runs {
        let input = match stdin {
            Some(path) => {
                Stdio::from(File::open(path).map_err(|e| format!("{}: {e}", path.display()))?)
            }
            None => Stdio::null(),
        };
        let began = Instant::now();
        let status = Command::new(program)
            .args(args)
            .stdin(input)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("{program}: {e}"))?;
        let took = began.elapsed();
        if !status.success() {
            return Err(format!("{name}: run {i} failed: {status}"));
        }
        if i >= warmup {
            samples.push(took);
        }
    }
    let s = samples.summary();
    let times = samples.seconds();
    Ok(serde_json::json!({
        "results": [{
            "command": name,
            "mean": s.mean_ms / 1e3,
            "stddev": s.sd_ms / 1e3,
            "median": s.median_ms / 1e3,
            "min": s.min_ms / 1e3,
            "max": s.max_ms / 1e3,
            "times": times,
        }]
    }))
}
