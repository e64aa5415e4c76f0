//! The plain `deputy run` lines, read by [`deputy_quick::line`] (the launcher's reader) instead
//! of clap: the full CLI runs them too when it is called directly (`deputy-cli run ...`), and
//! the tests below hold that reader to clap — for thousands of generated command lines,
//! whenever it answers, clap gives the same answer.

use std::ffi::OsString;
use std::path::PathBuf;

use deputy_quick::line::Plain;

use crate::run::RunArgs;
use crate::{Cli, Command};

/// Reads `args` (the program name first) when they are a plain `deputy run`; `None` otherwise,
/// and clap must parse them. `socket_env` is `$DEPUTY_SOCKET`.
pub fn parse(args: &[OsString], socket_env: Option<&OsString>) -> Option<Cli> {
    let words = args.iter().skip(1).map(|word| word.to_str());
    let plain = deputy_quick::line::parse(words, socket_env.map(|env| env.to_str()))?;
    Some(cli(plain))
}

/// The [`Cli`] clap would make of `plain`.
fn cli(plain: Plain) -> Cli {
    let Plain {
        socket,
        json,
        user,
        logon_type,
        keep_session,
        session,
        cwd,
        env,
        password_stdin,
        pty,
        no_pty,
        command,
    } = plain;
    Cli {
        socket: PathBuf::from(socket),
        json,
        remote: None,
        ca: None,
        cert: None,
        key: None,
        crls: Vec::new(),
        command: Command::Run(RunArgs {
            user,
            logon_type,
            keep_session,
            session,
            cwd: cwd.map(PathBuf::from),
            env,
            delegate: false,
            netonly: false,
            password_stdin,
            pty,
            no_pty,
            x11: false,
            grants: Vec::new(),
            command,
        }),
    }
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
