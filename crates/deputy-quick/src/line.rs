//! The plain `deputy run` line, read without clap.
//!
//! Most command lines are plain — `deputy [--socket P] [--json] run [OPTIONS] [--] CMD ARG...`
//! — and reading them takes a few comparisons, where building clap's command costs about
//! 0.3 ms of CPU per run.
//!
//! It is an optimisation, never a second grammar: anything it does not recognise exactly (an
//! option it does not list, an option given twice, two options that clap would refuse together,
//! a value that is empty, starts with `-` or is not UTF-8, `--help`, another subcommand) makes
//! [`parse`] step aside, and clap parses the line, with its help and its error messages.
//! deputy-cli's tests hold it to that: for thousands of generated command lines, whenever it
//! answers, clap gives the same answer.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

/// deputyd's socket unless `--socket` or `$DEPUTY_SOCKET` says otherwise.
pub use deputy_proto::DEFAULT_SOCKET;

/// A plain `deputy run` line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plain {
    /// deputyd's socket: `--socket`, else `$DEPUTY_SOCKET`, else [`DEFAULT_SOCKET`].
    pub socket: String,
    /// `--json`.
    pub json: bool,
    /// `-u`, `--user`.
    pub user: Option<String>,
    /// `--logon-type`.
    pub logon_type: Option<String>,
    /// `--keep-session`.
    pub keep_session: bool,
    /// `--session`.
    pub session: Option<String>,
    /// `-C`, `--cwd`.
    pub cwd: Option<String>,
    /// `--env`, in order.
    pub env: Vec<String>,
    /// `--password-stdin`.
    pub password_stdin: bool,
    /// `--pty`.
    pub pty: bool,
    /// `--no-pty`.
    pub no_pty: bool,
    /// The command and its arguments (never empty).
    pub command: Vec<String>,
}

/// Reads `args` (after the program's name; `None` for a word that is not UTF-8) when they are
/// a plain `deputy run`; `None` otherwise, and clap must parse them. `socket_env` is
/// `$DEPUTY_SOCKET`, if set (`Some(None)` if it is not UTF-8).
pub fn parse<'a>(
    args: impl IntoIterator<Item = Option<&'a str>>,
    socket_env: Option<Option<&str>>,
) -> Option<Plain> {
    let mut words = args.into_iter();
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
    let mut run = Plain::default();
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
            "-C" | "--cwd" => set_once(&mut run.cwd, value(inline, &mut words)?)?,
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
    run.socket = match (socket, socket_env) {
        (Some(path), _) => path,
        (None, Some(Some(env))) if !env.is_empty() => env.to_owned(),
        (None, Some(_)) => return None,
        (None, None) => DEFAULT_SOCKET.to_owned(),
    };
    run.json = json;
    Some(run)
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
