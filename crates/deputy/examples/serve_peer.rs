//! The seed's second procedure, "create a client process by impersonating the client", as a
//! small server built on deputy's public API only:
//!
//! 1. listen on a Unix socket and accept a client (`ImpersonateNamedPipeClient`);
//! 2. take the client's token from the kernel (`OpenThreadToken`);
//! 3. turn it into a primary token (`DuplicateTokenEx`);
//! 4. start the client's command as the client (`CreateProcessAsUser`) and report its exit.
//!
//! The demo's protocol is one line: the client writes the command (words separated by spaces)
//! and, by connecting to this demo, allows the Impersonation level. The command's stdout and
//! stderr are the connection; the server then writes the exit status and closes.
//!
//! ```text
//! serve_peer [SOCKET]                 serve (as root to act for other users); default
//!                                     /run/deputy-demo.sock
//! serve_peer connect SOCKET CMD...    be a client: send CMD, print what comes back
//! ```
//!
//! Try, with the server running as root:
//! `setpriv --reuid dpt-alice --regid dpt-alice --init-groups serve_peer connect /run/deputy-demo.sock id`

use std::error::Error;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::ExitCode;

use deputy::{ImpersonationLevel, SpawnRequest, Token};

const DEFAULT_SOCKET: &str = "/run/deputy-demo.sock";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("connect") if args.len() >= 3 => connect(&args[1], &args[2..].join(" ")),
        Some("connect") | Some("-h") | Some("--help") => {
            eprintln!("usage: serve_peer [SOCKET] | serve_peer connect SOCKET COMMAND...");
            return ExitCode::from(2);
        }
        socket => serve(socket.unwrap_or(DEFAULT_SOCKET)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("serve_peer: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(socket: &str) -> Result<(), Box<dyn Error>> {
    let report = deputy::check_privileges()?;
    if !report.is_sufficient() {
        eprintln!(
            "serve_peer: clients can only run commands as this process's own user:\n{report}"
        );
    }
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(|e| format!("cannot listen on {socket}: {e}"))?;
    // Every local user may connect; who they are comes from the kernel, not from them.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o666))?;
    println!("serve_peer: listening on {socket}");
    for client in listener.incoming() {
        let client = client?;
        std::thread::spawn(move || {
            if let Err(err) = serve_client(&client) {
                eprintln!("serve_peer: {err}");
                let _ = writeln!(&client, "[serve_peer] {err}");
            }
        });
    }
    Ok(())
}

fn serve_client(client: &UnixStream) -> Result<(), Box<dyn Error>> {
    // Steps 1 and 2: the client's token, from the kernel's record of the connection.
    let token = Token::from_peer(client, ImpersonationLevel::Impersonation)?;
    let mut line = String::new();
    BufReader::new(client.take(64 * 1024)).read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let program = words.next().ok_or("the client sent no command")?;
    // Step 3: DuplicateTokenEx to a primary token.
    let primary = token.to_primary()?;
    // Step 4: CreateProcessAsUser, with the connection as stdout and stderr.
    let request = SpawnRequest::new(program)
        .args(words)
        .stdout(client.try_clone()?)
        .stderr(client.try_clone()?);
    let child = deputy::spawn(&primary, request)?;
    let status = child.wait()?;
    let pid = token
        .peer()
        .map_or(0, |peer| peer.pid().as_raw_nonzero().get());
    println!(
        "serve_peer: {} (uid {}, pid {pid}) ran {program:?}: {status}",
        token.user(),
        token.uid().as_raw()
    );
    writeln!(&*client, "[serve_peer] {status}")?;
    Ok(())
}

fn connect(socket: &str, command: &str) -> Result<(), Box<dyn Error>> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| format!("cannot connect to {socket}: {e}"))?;
    writeln!(stream, "{command}")?;
    std::io::copy(&mut stream, &mut std::io::stdout())?;
    Ok(())
}
