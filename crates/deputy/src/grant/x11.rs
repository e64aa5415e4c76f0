//! X11: `SI:localuser:<user>` in the host access list (the server-interpreted family), so that
//! the user's processes may use the display without a cookie of their own — what
//! `xhost +SI:localuser:NAME` does.
//!
//! The connection is made with the caller's own cookie (kept in memory, wiped on drop) while
//! impersonating the caller, so the daemon can open no display the caller could not. It stays
//! open for the life of the grant: the revocation goes through it, and an X server that resets
//! when its last client leaves cannot drop the entry behind our back.

use std::os::unix::net::UnixStream;

use deputy_os::secret::Secret;
use x11rb::protocol::xproto::{ConnectionExt as _, Family, HostMode};
use x11rb::rust_connection::{DefaultStream, RustConnection};

use super::GrantError;
use crate::{Impersonation, Token};

/// A local display, `:N` or `:N.S`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct X11Display {
    /// N.
    pub number: u32,
    /// S.
    pub screen: u32,
}

impl X11Display {
    /// Parses `:N`, `:N.S` or `unix:N[.S]`; anything else (a TCP display) is refused.
    ///
    /// # Errors
    /// [`GrantError::InvalidDisplay`].
    pub fn parse(name: &str) -> Result<X11Display, GrantError> {
        let invalid = || GrantError::InvalidDisplay(name.to_owned());
        let rest = name
            .strip_prefix("unix")
            .unwrap_or(name)
            .strip_prefix(':')
            .ok_or_else(invalid)?;
        let (number, screen) = rest.split_once('.').unwrap_or((rest, "0"));
        let parse = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|_| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        };
        Ok(X11Display {
            number: parse(number).ok_or_else(invalid)?,
            screen: parse(screen).ok_or_else(invalid)?,
        })
    }

    /// The server's socket.
    pub fn socket(&self) -> std::path::PathBuf {
        format!("/tmp/.X11-unix/X{}", self.number).into()
    }
}

impl std::fmt::Display for X11Display {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, ":{}.{}", self.number, self.screen)
    }
}

/// An X authorization: protocol name (e.g. `MIT-MAGIC-COOKIE-1`) and data.
#[derive(Clone, Debug)]
pub struct X11Cookie {
    /// The protocol name.
    pub name: Vec<u8>,
    /// The secret data.
    pub data: Secret,
}

/// A held grant of a display to a user.
pub struct X11Access {
    conn: RustConnection,
    display: X11Display,
    entry: Vec<u8>,
    added: bool,
    /// What a later revocation by another process needs (see [`X11Access::record`]).
    cookie: X11Cookie,
    caller: u32,
}

/// What it takes to undo an [`X11Access`] from another process (a daemon restarted after the
/// one that made the grant died): the display, the entry, whether the grant added it, and
/// the caller whose right (uid and cookie) reaches the display. It holds the cookie: keep it
/// where only root can read it, for no longer than the grant.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct X11Record {
    /// The display, `:N.S`.
    pub display: String,
    /// The user the entry names.
    pub user: String,
    /// Whether the grant added the entry (false: it was there before, and stays).
    pub added: bool,
    /// The caller's uid.
    pub caller_uid: u32,
    /// The cookie's protocol name.
    pub cookie_name: String,
    /// The cookie's data, in hex.
    pub cookie_hex: String,
}

impl std::fmt::Debug for X11Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Record")
            .field("display", &self.display)
            .field("user", &self.user)
            .field("added", &self.added)
            .field("caller_uid", &self.caller_uid)
            .finish_non_exhaustive()
    }
}

impl Drop for X11Record {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.cookie_hex);
    }
}

impl X11Record {
    /// Removes the entry if the grant added it: connects to the display as the caller, with
    /// the caller's cookie, as the grant did.
    ///
    /// # Errors
    /// [`GrantError::InvalidDisplay`] for a record that does not parse, the caller's account
    /// gone, or what the display answers (as [`X11Access::grant`]).
    pub fn revoke(&self) -> Result<(), GrantError> {
        if !self.added {
            return Ok(());
        }
        let display = X11Display::parse(&self.display)?;
        let caller = Token::for_uid(deputy_os::Uid::from_raw(self.caller_uid)).map_err(|e| {
            GrantError::Connect {
                display: self.display.clone(),
                reason: format!("the caller's account: {e}"),
            }
        })?;
        let data: Option<Vec<u8>> = (0..self.cookie_hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(self.cookie_hex.get(i..i + 2)?, 16).ok())
            .collect();
        let cookie = X11Cookie {
            name: self.cookie_name.as_bytes().to_vec(),
            data: Secret::new(data.ok_or_else(|| GrantError::Connect {
                display: self.display.clone(),
                reason: "the recorded cookie is not hex".into(),
            })?),
        };
        let conn = connect(&display, &cookie, &caller)?;
        let entry = [b"localuser\0".as_slice(), self.user.as_bytes()].concat();
        delete(&conn, &display, &entry)
    }
}

/// A connection to `display` as `caller` (whose right to reach its socket is checked by the
/// kernel, not ours), authorized by `cookie`.
fn connect(
    display: &X11Display,
    cookie: &X11Cookie,
    caller: &Token,
) -> Result<RustConnection, GrantError> {
    let connect_error = |reason: String| GrantError::Connect {
        display: display.to_string(),
        reason,
    };
    let stream = {
        let _as_caller = Impersonation::begin(caller)?;
        UnixStream::connect(display.socket()).map_err(|e| connect_error(e.to_string()))?
    };
    let (stream, _) =
        DefaultStream::from_unix_stream(stream).map_err(|e| connect_error(e.to_string()))?;
    RustConnection::connect_to_stream_with_auth_info(
        stream,
        display.screen as usize,
        cookie.name.clone(),
        cookie.data.expose().to_vec(),
    )
    .map_err(|e| connect_error(e.to_string()))
}

/// Removes `entry` from the host access list of `display`.
fn delete(conn: &RustConnection, display: &X11Display, entry: &[u8]) -> Result<(), GrantError> {
    let error = x11_error(display);
    conn.change_hosts(HostMode::DELETE, Family::SERVER_INTERPRETED, entry)
        .map_err(|e| error(e.to_string()))?
        .check()
        .map_err(|e| error(e.to_string()))
}

impl std::fmt::Debug for X11Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X11Access")
            .field("display", &self.display)
            .field("added", &self.added)
            .finish_non_exhaustive()
    }
}

fn x11_error(display: &X11Display) -> impl Fn(String) -> GrantError + '_ {
    move |reason| GrantError::X11 {
        display: display.to_string(),
        reason,
    }
}

impl X11Access {
    /// Connects to `display` as `caller` with `cookie` and adds `SI:localuser:<user>` to its
    /// host access list, unless it is there already (then [`X11Access::added`] is false and
    /// revoking leaves it in place).
    ///
    /// # Errors
    /// [`GrantError::Connect`] when the display refuses the caller or cannot be reached,
    /// [`GrantError::X11`] when it refuses the change.
    pub fn grant(
        display: &X11Display,
        cookie: &X11Cookie,
        user: &str,
        caller: &Token,
    ) -> Result<X11Access, GrantError> {
        // Reaching the socket is the caller's right, not the daemon's.
        let conn = connect(display, cookie, caller)?;
        let entry = [b"localuser\0".as_slice(), user.as_bytes()].concat();
        let error = x11_error(display);
        let hosts = conn
            .list_hosts()
            .map_err(|e| error(e.to_string()))?
            .reply()
            .map_err(|e| error(e.to_string()))?;
        let present = hosts
            .hosts
            .iter()
            .any(|host| host.family == Family::SERVER_INTERPRETED && host.address == entry);
        if !present {
            conn.change_hosts(HostMode::INSERT, Family::SERVER_INTERPRETED, &entry)
                .map_err(|e| error(e.to_string()))?
                .check()
                .map_err(|e| error(e.to_string()))?;
        }
        Ok(X11Access {
            conn,
            display: display.clone(),
            entry,
            added: !present,
            cookie: cookie.clone(),
            caller: caller.uid().as_raw(),
        })
    }

    /// Whether the grant added the entry (false: it was there before, and stays after).
    pub fn added(&self) -> bool {
        self.added
    }

    /// The display.
    pub fn display(&self) -> &X11Display {
        &self.display
    }

    /// What another process needs to undo the grant: see [`X11Record::revoke`].
    pub fn record(&self) -> X11Record {
        let user = self
            .entry
            .strip_prefix(b"localuser\0".as_slice())
            .unwrap_or(&self.entry);
        X11Record {
            display: self.display.to_string(),
            user: String::from_utf8_lossy(user).into_owned(),
            added: self.added,
            caller_uid: self.caller,
            cookie_name: String::from_utf8_lossy(&self.cookie.name).into_owned(),
            cookie_hex: self
                .cookie
                .data
                .expose()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }

    /// Removes the entry if the grant added it, and closes the connection.
    ///
    /// # Errors
    /// [`GrantError::X11`] when the server refuses.
    pub fn revoke(self) -> Result<(), GrantError> {
        if self.added {
            delete(&self.conn, &self.display, &self.entry)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_displays_parse() {
        assert_eq!(
            X11Display::parse(":0").unwrap(),
            X11Display {
                number: 0,
                screen: 0
            }
        );
        assert_eq!(
            X11Display::parse(":12.1").unwrap(),
            X11Display {
                number: 12,
                screen: 1
            }
        );
        assert_eq!(
            X11Display::parse("unix:3").unwrap().socket(),
            std::path::Path::new("/tmp/.X11-unix/X3")
        );
        for bad in [
            "localhost:0",
            "10.0.0.1:0",
            ":",
            ":x",
            ":1.",
            "",
            ":-1",
            ":1/../2",
        ] {
            assert!(X11Display::parse(bad).is_err(), "{bad}");
        }
    }
}
