//! The common shapes of `deputy run`, read without building clap's command.
//!
//! Every `deputy run` pays for its own start-up: here, building clap's command and matching
//! the arguments against it cost about 0.3 ms of CPU and 22 page faults per run, a tenth of a
//! whole `deputy run -- /bin/true` (see README, "Performance"). Most command lines are
//! plain — `deputy [--socket P] run [-u USER] [--no-pty] [--] CMD ARG...` — and for those this
//! module builds the same [`Cli`] that clap would, directly.
//!
//! It is an optimisation, never a second grammar: anything it does not recognise exactly (an
//! option it does not list, an option given twice, two options that clap would refuse together,
//! a value that is empty, starts with `-` or is not UTF-8, `--help`, another subcommand) makes it
//! step aside, and clap parses the line, with its help and its error messages. The tests below
//! hold it to that: for thousands of generated command lines, whenever it answers, clap gives the
//! same answer.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::run::RunArgs;
use crate::{Cli, Command};

/// Reads `args` (the program name first) when they are a plain `deputy run`; `None` otherwise,
/// and clap must parse them. `socket_env` is `$DEPUTY_SOCKET`.
pub fn parse(args: &[OsString], socket_env: Option<&OsString>) -> Option<Cli> {
    let mut words = args.iter().skip(1).map(|word| word.to_str());
    let mut socket = None;
    let mut json = false;
    // Options of deputy itself, up to `run`.
    loop {
        let word = words.next()??;
        if word == "run" {
            break;
        }
        if !global_option(word, &mut words, &mut socket, &mut json)? {
            return None;
        }
    }
    let mut run = RunArgs {
        user: None,
        logon_type: None,
        keep_session: false,
        session: None,
        cwd: None,
        env: Vec::new(),
        delegate: false,
        netonly: false,
        password_stdin: false,
        pty: false,
        no_pty: false,
        x11: false,
        grants: Vec::new(),
        command: Vec::new(),
    };
    // Options of run, up to the command.
    let first = loop {
        let word = words.next()??;
        if word == "--" {
            break None;
        }
        if !word.starts_with('-') {
            break Some(word);
        }
        if global_option(word, &mut words, &mut socket, &mut json)? {
            continue;
        }
        let (name, inline) = match word.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (word, None),
        };
        match name {
            "-u" | "--user" => set_once(&mut run.user, value(inline, &mut words)?)?,
            "--logon-type" => set_once(&mut run.logon_type, value(inline, &mut words)?)?,
            "--session" => set_once(&mut run.session, value(inline, &mut words)?)?,
            "-C" | "--cwd" => set_once(&mut run.cwd, PathBuf::from(value(inline, &mut words)?))?,
            "--env" => run.env.push(value(inline, &mut words)?),
            "--keep-session" => flag_once(&mut run.keep_session, inline)?,
            "--password-stdin" => flag_once(&mut run.password_stdin, inline)?,
            "--pty" => flag_once(&mut run.pty, inline)?,
            "--no-pty" => flag_once(&mut run.no_pty, inline)?,
            _ => return None,
        }
    };
    // clap's conflicts: leave them to clap, which explains them.
    if (run.session.is_some() && run.user.is_some()) || (run.pty && run.no_pty) {
        return None;
    }
    run.command = first
        .into_iter()
        .map(|word| Some(word.to_owned()))
        .chain(words.map(|word| word.map(str::to_owned)))
        .collect::<Option<_>>()?;
    if run.command.is_empty() {
        return None;
    }
    let socket = match (socket, socket_env) {
        (Some(path), _) => PathBuf::from(path),
        (None, Some(env)) if !env.is_empty() => PathBuf::from(env),
        (None, Some(_)) => return None,
        (None, None) => PathBuf::from(deputy_proto::DEFAULT_SOCKET),
    };
    Some(Cli {
        socket,
        json,
        remote: None,
        ca: None,
        cert: None,
        key: None,
        crls: Vec::new(),
        command: Command::Run(run),
    })
}

/// `--socket PATH`, `--socket=PATH` or `--json` (global options: before or after `run`).
/// `Some(true)` when `word` was one, `Some(false)` when it was not, `None` to step aside.
fn global_option<'a>(
    word: &'a str,
    words: &mut impl Iterator<Item = Option<&'a str>>,
    socket: &mut Option<String>,
    json: &mut bool,
) -> Option<bool> {
    match word.split_once('=') {
        Some(("--socket", inline)) => set_once(socket, value(Some(inline), words)?)?,
        Some(_) => return Some(false),
        None if word == "--socket" => set_once(socket, value(None, words)?)?,
        None if word == "--json" => flag_once(json, None)?,
        None => return Some(false),
    }
    Some(true)
}

/// An option's value: inline (`--user=bob`) or the next word. Values clap might read otherwise
/// (empty, or starting with `-`) are left to it.
fn value<'a>(
    inline: Option<&'a str>,
    words: &mut impl Iterator<Item = Option<&'a str>>,
) -> Option<String> {
    let value = match inline {
        Some(value) => value,
        None => words.next()??,
    };
    (!value.is_empty() && !value.starts_with('-')).then(|| value.to_owned())
}

/// Sets an option that may be given once (clap refuses a second).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

/// Sets a flag, which takes no value and may be given once.
fn flag_once(flag: &mut bool, inline: Option<&str>) -> Option<()> {
    (!*flag && inline.is_none()).then(|| *flag = true)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn line(words: &[&str]) -> Vec<OsString> {
        std::iter::once("deputy")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    /// Whenever `parse` answers, clap gives the same answer.
    fn agrees_with_clap(args: &[OsString]) -> bool {
        let env = std::env::var_os("DEPUTY_SOCKET");
        let Some(quick) = parse(args, env.as_ref()) else {
            return false;
        };
        let clap = Cli::try_parse_from(args)
            .unwrap_or_else(|err| panic!("{args:?}: read quickly as {quick:?}, but clap: {err}"));
        assert_eq!(format!("{quick:?}"), format!("{clap:?}"), "{args:?}");
        true
    }

    #[test]
    fn plain_command_lines_are_read_as_clap_reads_them() {
        for words in [
            &["run", "--", "/bin/true"][..],
            &["run", "id"],
            &["run", "-u", "dpt-alice", "--", "/bin/true"],
            &[
                "--socket",
                "/tmp/s",
                "run",
                "-u",
                "dpt-alice",
                "--",
                "/bin/true",
            ],
            &[
                "--socket=/tmp/s",
                "--json",
                "run",
                "--user=bob",
                "sh",
                "-c",
                "exit 3",
            ],
            &[
                "run",
                "--no-pty",
                "--env",
                "A=1",
                "--env=B=2",
                "-C",
                "/tmp",
                "--",
                "-x",
            ],
            &[
                "run",
                "--keep-session",
                "--logon-type",
                "batch",
                "-u",
                "bob",
                "id",
                "--",
                "-u",
            ],
            &[
                "run",
                "--session",
                "abc",
                "--password-stdin",
                "--pty",
                "cat",
            ],
            &["run", "--socket", "/a", "--json", "--", "--remote", "x"],
        ] {
            assert!(
                agrees_with_clap(&line(words)),
                "not read quickly: {words:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_left_to_clap() {
        for words in [
            &["run"][..],
            &["run", "--"],
            &["run", "-x"],
            &["run", "--help"],
            &["run", "-u"],
            &["run", "-u", "--", "id"],
            &["run", "-ubob", "id"],
            &["run", "-u", "", "id"],
            &["run", "--user=", "id"],
            &["run", "-u", "a", "-u", "b", "id"],
            &["run", "--session", "s", "-u", "b", "id"],
            &["run", "--pty", "--no-pty", "id"],
            &["run", "--pty=yes", "id"],
            &["run", "--x11", "id"],
            &["run", "--delegate", "id"],
            &["--json", "--json", "run", "id"],
            &["--remote", "h:1", "run", "id"],
            &["--socket", "-", "run", "id"],
            &["whoami"],
            &["sessions", "run"],
            &["--help"],
            &[],
        ] {
            let args = line(words);
            assert!(parse(&args, None).is_none(), "read quickly: {words:?}");
        }
    }

    /// Thousands of command lines made of options, values and commands, in every order up to
    /// three options: wherever `parse` answers, clap agrees.
    #[test]
    fn generated_command_lines_agree_with_clap() {
        let prefixes: &[&[&str]] = &[
            &[],
            &["--socket", "/s"],
            &["--socket=/s"],
            &["--json"],
            &["--json", "--socket", "/s"],
            &["--remote", "h:1"],
        ];
        let options: &[&[&str]] = &[
            &["-u", "bob"],
            &["--user=bob"],
            &["--user", "bob"],
            &["--logon-type", "batch"],
            &["--keep-session"],
            &["--session", "abc"],
            &["-C", "/tmp"],
            &["--cwd=/tmp"],
            &["--env", "A=1"],
            &["--env=B=2"],
            &["--password-stdin"],
            &["--no-pty"],
            &["--pty"],
            &["--json"],
            &["--socket", "/t"],
            &["--x11"],
            &["-u"],
            &["--netonly"],
        ];
        let commands: &[&[&str]] = &[
            &["--", "id"],
            &["id"],
            &["--", "-x"],
            &["id", "-u", "x"],
            &["--"],
            &[],
            &["-x"],
            &["--", "--", "a"],
            &["id", "--", "x"],
        ];
        let mut read = 0;
        let mut seen = 0;
        let mut sequences: Vec<Vec<&[&str]>> = vec![Vec::new()];
        for _ in 0..3 {
            let longer: Vec<_> = sequences
                .iter()
                .filter(|seq| seq.len() < 3)
                .flat_map(|seq| {
                    options.iter().map(move |option| {
                        let mut seq = seq.clone();
                        seq.push(*option);
                        seq
                    })
                })
                .collect();
            sequences.extend(longer);
            sequences.sort();
            sequences.dedup();
        }
        for prefix in prefixes {
            for sequence in &sequences {
                // Every sequence of up to two options, and a sample of the longer ones.
                if sequence.len() == 3 && (seen % 7 != 0) {
                    seen += 1;
                    continue;
                }
                seen += 1;
                for command in commands {
                    let mut words: Vec<&str> = prefix.to_vec();
                    words.push("run");
                    sequence.iter().for_each(|option| words.extend(*option));
                    words.extend(*command);
                    read += usize::from(agrees_with_clap(&line(&words)));
                }
            }
        }
        assert!(read > 1000, "only {read} command lines were read quickly");
    }
}
