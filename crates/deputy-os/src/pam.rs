//! The application side of PAM (Linux-PAM's `libpam`), with our own small set of bindings.
//!
//! ```text
//!   Pam::start ──▶ pam_start(service, user, conv)           conv → converse() → Conversation
//!   authenticate ─▶ pam_authenticate   acct_mgmt ─▶ pam_acct_mgmt
//!   setcred(Establish) ─▶ pam_setcred   open_session ─▶ pam_open_session
//!   env_list ─▶ pam_getenvlist          close_session, setcred(Delete)
//!   drop ──▶ pam_end(last status)
//! ```
//!
//! Why not the `pam-client` crate: it frees conversation answers without wiping them, lets a
//! panic in the conversation unwind into C, and needs bindgen and libclang at build time. The
//! handful of functions and constants here come from Linux-PAM's `_pam_types.h`, whose ABI has
//! been stable for two decades (sudo-rs keeps its own bindings for the same reasons).
//!
//! What this module guarantees: every answer given to PAM is copied into `malloc`ed memory that
//! PAM owns (Linux-PAM's modules overwrite it before freeing) and our copy is wiped on drop; a
//! panic in the [`Conversation`] becomes `PAM_CONV_ERR`; PAM's own failure delay can be taken
//! over ([`Pam::take_over_fail_delay`]) so a failed password costs what the application decides.

use std::ffi::{CStr, CString, OsString, c_char, c_int, c_uint, c_void};
use std::fmt;
use std::os::unix::ffi::OsStringExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::{self, NonNull};

use crate::secret::Secret;

/// `struct pam_message`.
#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

/// `struct pam_response`.
#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn = unsafe extern "C" fn(
    c_int,
    *mut *const PamMessage,
    *mut *mut PamResponse,
    *mut c_void,
) -> c_int;
type FailDelayFn = unsafe extern "C" fn(c_int, c_uint, *mut c_void);

/// `struct pam_conv`.
#[repr(C)]
struct PamConv {
    conv: Option<ConvFn>,
    appdata_ptr: *mut c_void,
}

/// `pam_handle_t`, opaque.
enum PamHandleT {}

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_start(
        service: *const c_char,
        user: *const c_char,
        conv: *const PamConv,
        pamh: *mut *mut PamHandleT,
    ) -> c_int;
    fn pam_end(pamh: *mut PamHandleT, status: c_int) -> c_int;
    fn pam_authenticate(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_acct_mgmt(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_setcred(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_open_session(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_close_session(pamh: *mut PamHandleT, flags: c_int) -> c_int;
    fn pam_get_item(pamh: *const PamHandleT, item_type: c_int, item: *mut *const c_void) -> c_int;
    fn pam_set_item(pamh: *mut PamHandleT, item_type: c_int, item: *const c_void) -> c_int;
    fn pam_getenvlist(pamh: *mut PamHandleT) -> *mut *mut c_char;
}

const PAM_SUCCESS: c_int = 0;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_SILENT: c_int = 0x8000;
const PAM_ESTABLISH_CRED: c_int = 0x2;
const PAM_DELETE_CRED: c_int = 0x4;
const PAM_REINITIALIZE_CRED: c_int = 0x8;
const PAM_USER: c_int = 2;
const PAM_TTY: c_int = 3;
const PAM_RHOST: c_int = 4;
const PAM_RUSER: c_int = 8;
const PAM_FAIL_DELAY: c_int = 10;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_ERROR_MSG: c_int = 3;
const PAM_TEXT_INFO: c_int = 4;
const PAM_MAX_NUM_MSG: c_int = 32;

/// A PAM return code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PamCode(pub i32);

impl PamCode {
    /// `PAM_PERM_DENIED`.
    pub const PERM_DENIED: PamCode = PamCode(6);
    /// `PAM_AUTH_ERR`: the credentials were wrong.
    pub const AUTH_ERR: PamCode = PamCode(7);
    /// `PAM_CRED_INSUFFICIENT`.
    pub const CRED_INSUFFICIENT: PamCode = PamCode(8);
    /// `PAM_AUTHINFO_UNAVAIL`: the authentication service could not be reached.
    pub const AUTHINFO_UNAVAIL: PamCode = PamCode(9);
    /// `PAM_USER_UNKNOWN`.
    pub const USER_UNKNOWN: PamCode = PamCode(10);
    /// `PAM_MAXTRIES`.
    pub const MAXTRIES: PamCode = PamCode(11);
    /// `PAM_NEW_AUTHTOK_REQD`: the password has expired and must be changed.
    pub const NEW_AUTHTOK_REQD: PamCode = PamCode(12);
    /// `PAM_ACCT_EXPIRED`.
    pub const ACCT_EXPIRED: PamCode = PamCode(13);
    /// `PAM_CONV_ERR`: the conversation could not answer.
    pub const CONV_ERR: PamCode = PamCode(PAM_CONV_ERR);

    /// The constant's name, e.g. `PAM_AUTH_ERR`.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 32] = [
            "PAM_SUCCESS",
            "PAM_OPEN_ERR",
            "PAM_SYMBOL_ERR",
            "PAM_SERVICE_ERR",
            "PAM_SYSTEM_ERR",
            "PAM_BUF_ERR",
            "PAM_PERM_DENIED",
            "PAM_AUTH_ERR",
            "PAM_CRED_INSUFFICIENT",
            "PAM_AUTHINFO_UNAVAIL",
            "PAM_USER_UNKNOWN",
            "PAM_MAXTRIES",
            "PAM_NEW_AUTHTOK_REQD",
            "PAM_ACCT_EXPIRED",
            "PAM_SESSION_ERR",
            "PAM_CRED_UNAVAIL",
            "PAM_CRED_EXPIRED",
            "PAM_CRED_ERR",
            "PAM_NO_MODULE_DATA",
            "PAM_CONV_ERR",
            "PAM_AUTHTOK_ERR",
            "PAM_AUTHTOK_RECOVERY_ERR",
            "PAM_AUTHTOK_LOCK_BUSY",
            "PAM_AUTHTOK_DISABLE_AGING",
            "PAM_TRY_AGAIN",
            "PAM_IGNORE",
            "PAM_ABORT",
            "PAM_AUTHTOK_EXPIRED",
            "PAM_MODULE_UNKNOWN",
            "PAM_BAD_ITEM",
            "PAM_CONV_AGAIN",
            "PAM_INCOMPLETE",
        ];
        usize::try_from(self.0)
            .ok()
            .and_then(|i| NAMES.get(i))
            .copied()
            .unwrap_or("PAM_UNKNOWN_CODE")
    }
}

impl fmt::Display for PamCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A PAM call that did not return `PAM_SUCCESS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PamError {
    /// The function, e.g. `pam_authenticate`.
    pub call: &'static str,
    /// What it returned.
    pub code: PamCode,
}

impl fmt::Display for PamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} returned {}", self.call, self.code)
    }
}

impl std::error::Error for PamError {}

/// Whether a prompt's answer is shown as it is typed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// A secret: a password, a one-time code.
    Off,
    /// Not secret: a user name, a yes/no.
    On,
}

/// Answers the questions a PAM stack asks. Implementations decide where the answers come from:
/// a stored password, a client on the other end of a socket, a terminal.
pub trait Conversation: Send {
    /// Answers a prompt, or `None` when it cannot (the PAM call then fails with
    /// `PAM_CONV_ERR`).
    fn prompt(&mut self, text: &str, echo: Echo) -> Option<Secret>;
    /// A message for the user (`PAM_TEXT_INFO`).
    fn info(&mut self, text: &str);
    /// An error message for the user (`PAM_ERROR_MSG`).
    fn error(&mut self, text: &str);
}

/// `pam_setcred` actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredAction {
    /// `PAM_ESTABLISH_CRED`.
    Establish,
    /// `PAM_REINITIALIZE_CRED`.
    Reinitialize,
    /// `PAM_DELETE_CRED`.
    Delete,
}

/// String items an application may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// `PAM_USER`: the user to log on.
    User,
    /// `PAM_TTY`: the terminal, or an X display name.
    Tty,
    /// `PAM_RHOST`: the remote host.
    RemoteHost,
    /// `PAM_RUSER`: the requesting user.
    RemoteUser,
}

/// One PAM transaction (a `pam_handle_t`), ended with `pam_end` when dropped.
pub struct Pam {
    handle: NonNull<PamHandleT>,

    _conversation: Box<Box<dyn Conversation>>,
    last_status: c_int,
}

// SAFETY: a pam_handle_t has no thread affinity; every use goes through `&mut self` or `&self`
// of this single owner, so it is never used from two threads at once. The conversation it calls
// back into is `Send`.
unsafe impl Send for Pam {}

impl fmt::Debug for Pam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pam")
            .field("last_status", &PamCode(self.last_status))
            .finish_non_exhaustive()
    }
}

impl Pam {
    /// `pam_start(service, user, conv)`. Without a user, set [`Item::User`] before
    /// authenticating: a stack can be loaded before anyone asks to log on.
    ///
    /// # Errors
    /// `PAM_BUF_ERR` for a service or user name with a NUL byte; `PAM_SYSTEM_ERR` and the like
    /// when the service file cannot be read.
    pub fn start(
        service: &str,
        user: Option<&str>,
        conversation: Box<dyn Conversation>,
    ) -> Result<Pam, PamError> {
        let buf_err = PamError {
            call: "pam_start",
            code: PamCode(PAM_BUF_ERR),
        };
        let service = CString::new(service).map_err(|_| buf_err)?;
        let user = user.map(CString::new).transpose().map_err(|_| buf_err)?;
        let mut conversation = Box::new(conversation);
        let conv = PamConv {
            conv: Some(converse),
            appdata_ptr: (&raw mut *conversation).cast(),
        };
        let mut handle: *mut PamHandleT = ptr::null_mut();
        // SAFETY: all pointers are live for the call; pam_start copies the pam_conv struct and
        // keeps only `appdata_ptr`, which points into the Box we keep in the returned Pam.
        let status = unsafe {
            pam_start(
                service.as_ptr(),
                user.as_ref().map_or(ptr::null(), |u| u.as_ptr()),
                &conv,
                &mut handle,
            )
        };
        let handle = NonNull::new(handle).ok_or(PamError {
            call: "pam_start",
            code: PamCode(status),
        })?;
        let pam = Pam {
            handle,
            _conversation: conversation,
            last_status: status,
        };
        if status != PAM_SUCCESS {
            return Err(PamError {
                call: "pam_start",
                code: PamCode(status),
            });
        }
        Ok(pam)
    }

    fn check(&mut self, call: &'static str, status: c_int) -> Result<(), PamError> {
        self.last_status = status;
        if status == PAM_SUCCESS {
            Ok(())
        } else {
            Err(PamError {
                call,
                code: PamCode(status),
            })
        }
    }

    /// Sets `PAM_FAIL_DELAY` to a function that does nothing: modules' failure delays
    /// (`pam_faildelay`, pam_unix's own) no longer sleep in `pam_authenticate`, and the
    /// application applies the delay it chooses, without blocking anything else.
    ///
    /// # Errors
    /// `PAM_BAD_ITEM` if the library does not support the item.
    pub fn take_over_fail_delay(&mut self) -> Result<(), PamError> {
        let delay: FailDelayFn = ignore_fail_delay;
        // SAFETY: PAM_FAIL_DELAY takes a function pointer of exactly this signature
        // (`void (*)(int, unsigned, void *)`, pam_fail_delay(3)); it is 'static.
        let status =
            unsafe { pam_set_item(self.handle.as_ptr(), PAM_FAIL_DELAY, delay as *const c_void) };
        self.check("pam_set_item(PAM_FAIL_DELAY)", status)
    }

    /// `pam_set_item` for a string item.
    ///
    /// # Errors
    /// `PAM_BUF_ERR` for a value with a NUL byte.
    pub fn set_item(&mut self, item: Item, value: &str) -> Result<(), PamError> {
        let (code, call) = match item {
            Item::User => (PAM_USER, "pam_set_item(PAM_USER)"),
            Item::Tty => (PAM_TTY, "pam_set_item(PAM_TTY)"),
            Item::RemoteHost => (PAM_RHOST, "pam_set_item(PAM_RHOST)"),
            Item::RemoteUser => (PAM_RUSER, "pam_set_item(PAM_RUSER)"),
        };
        let value = CString::new(value).map_err(|_| PamError {
            call,
            code: PamCode(PAM_BUF_ERR),
        })?;
        // SAFETY: string items are copied by pam_set_item; `value` is live for the call.
        let status = unsafe { pam_set_item(self.handle.as_ptr(), code, value.as_ptr().cast()) };
        self.check(call, status)
    }

    /// `pam_authenticate(PAM_SILENT)`.
    ///
    /// # Errors
    /// `PAM_AUTH_ERR` for wrong credentials, `PAM_USER_UNKNOWN`, `PAM_MAXTRIES`,
    /// `PAM_AUTHINFO_UNAVAIL`, `PAM_CONV_ERR` when the conversation could not answer.
    pub fn authenticate(&mut self) -> Result<(), PamError> {
        // SAFETY: a live handle from pam_start.
        let status = unsafe { pam_authenticate(self.handle.as_ptr(), PAM_SILENT) };
        self.check("pam_authenticate", status)
    }

    /// `pam_acct_mgmt(PAM_SILENT)`.
    ///
    /// # Errors
    /// `PAM_ACCT_EXPIRED`, `PAM_NEW_AUTHTOK_REQD` (the password must be changed),
    /// `PAM_PERM_DENIED`, `PAM_USER_UNKNOWN`.
    pub fn acct_mgmt(&mut self) -> Result<(), PamError> {
        // SAFETY: a live handle from pam_start.
        let status = unsafe { pam_acct_mgmt(self.handle.as_ptr(), PAM_SILENT) };
        self.check("pam_acct_mgmt", status)
    }

    /// `pam_setcred(action | PAM_SILENT)`.
    ///
    /// # Errors
    /// `PAM_CRED_ERR`, `PAM_CRED_UNAVAIL`, `PAM_CRED_EXPIRED`, `PAM_USER_UNKNOWN`.
    pub fn setcred(&mut self, action: CredAction) -> Result<(), PamError> {
        let flag = match action {
            CredAction::Establish => PAM_ESTABLISH_CRED,
            CredAction::Reinitialize => PAM_REINITIALIZE_CRED,
            CredAction::Delete => PAM_DELETE_CRED,
        };
        // SAFETY: a live handle from pam_start.
        let status = unsafe { pam_setcred(self.handle.as_ptr(), flag | PAM_SILENT) };
        self.check("pam_setcred", status)
    }

    /// `pam_open_session(PAM_SILENT)`.
    ///
    /// # Errors
    /// `PAM_SESSION_ERR` when a session module fails.
    pub fn open_session(&mut self) -> Result<(), PamError> {
        // SAFETY: a live handle from pam_start.
        let status = unsafe { pam_open_session(self.handle.as_ptr(), PAM_SILENT) };
        self.check("pam_open_session", status)
    }

    /// `pam_close_session(PAM_SILENT)`.
    ///
    /// # Errors
    /// `PAM_SESSION_ERR` when a session module fails.
    pub fn close_session(&mut self) -> Result<(), PamError> {
        // SAFETY: a live handle from pam_start.
        let status = unsafe { pam_close_session(self.handle.as_ptr(), PAM_SILENT) };
        self.check("pam_close_session", status)
    }

    /// `PAM_USER`: the user as the stack now sees it (a module may have changed it).
    ///
    /// # Errors
    /// `PAM_BAD_ITEM`, or `PAM_BUF_ERR` when the item is unset.
    pub fn user(&self) -> Result<String, PamError> {
        let mut item: *const c_void = ptr::null();
        // SAFETY: a live handle; `item` receives a pointer owned by PAM.
        let status = unsafe { pam_get_item(self.handle.as_ptr(), PAM_USER, &mut item) };
        if status != PAM_SUCCESS || item.is_null() {
            let code = if status == PAM_SUCCESS {
                PAM_BUF_ERR
            } else {
                status
            };
            return Err(PamError {
                call: "pam_get_item(PAM_USER)",
                code: PamCode(code),
            });
        }
        // SAFETY: PAM_USER is a NUL-terminated string owned by the handle, alive until the
        // next change of the item; it is copied at once.
        let user = unsafe { CStr::from_ptr(item.cast::<c_char>()) };
        Ok(user.to_string_lossy().into_owned())
    }

    /// `pam_getenvlist`: the environment the stack set up (pam_env, pam_krb5's `KRB5CCNAME`,
    /// ...), as `(name, value)` pairs. PAM's copies are wiped and freed.
    pub fn env_list(&self) -> Vec<(OsString, OsString)> {
        // SAFETY: a live handle; the result is a malloc'ed, NULL-terminated array of malloc'ed
        // strings that we now own.
        let list = unsafe { pam_getenvlist(self.handle.as_ptr()) };
        let mut vars = Vec::new();
        if list.is_null() {
            return vars;
        }
        for i in 0.. {
            let slot = list.wrapping_add(i);
            // SAFETY: `list` is NULL-terminated and we stop at the terminator, so `slot` is
            // within the array.
            let entry = unsafe { *slot };
            if entry.is_null() {
                break;
            }
            // SAFETY: each entry is a NUL-terminated string from PAM.
            let bytes = unsafe { CStr::from_ptr(entry) }.to_bytes().to_vec();
            if let Some(eq) = bytes.iter().position(|b| *b == b'=') {
                let (name, value) = (bytes[..eq].to_vec(), bytes[eq + 1..].to_vec());
                vars.push((OsString::from_vec(name), OsString::from_vec(value)));
            }
            // SAFETY: we own the entry; wipe it (it may hold a credential's location) and free.
            unsafe { wipe_and_free(entry) };
        }
        // SAFETY: we own the array itself too.
        unsafe { libc::free(list.cast()) };
        vars
    }
}

impl Drop for Pam {
    fn drop(&mut self) {
        // SAFETY: the handle came from pam_start and is ended exactly once, here.
        unsafe { pam_end(self.handle.as_ptr(), self.last_status) };
    }
}

/// Overwrites a malloc'ed C string and frees it.
///
/// # Safety
/// `s` must be a NUL-terminated string allocated with `malloc`, owned by the caller and not
/// used afterwards.
unsafe fn wipe_and_free(s: *mut c_char) {
    // SAFETY: per the contract, `s` is a live NUL-terminated string.
    let len = unsafe { libc::strlen(s) };
    // SAFETY: `len` bytes starting at `s` are ours to write; explicit_bzero is not optimised away.
    unsafe { libc::explicit_bzero(s.cast(), len) };
    // SAFETY: allocated with malloc and owned by us.
    unsafe { libc::free(s.cast()) };
}

/// The `PAM_FAIL_DELAY` callback: deliberately nothing.
///
/// # Safety
/// Called by libpam only; it touches none of its arguments.
unsafe extern "C" fn ignore_fail_delay(_status: c_int, _usec: c_uint, _appdata: *mut c_void) {}

/// The conversation function PAM calls. A panic becomes `PAM_CONV_ERR`: unwinding into C is
/// undefined behaviour.
///
/// # Safety
/// Called by libpam only, with the arguments pam_conv(3) describes and the `appdata_ptr` that
/// [`Pam::start`] registered.
unsafe extern "C" fn converse(
    count: c_int,
    messages: *mut *const PamMessage,
    responses: *mut *mut PamResponse,
    appdata: *mut c_void,
) -> c_int {
    let result = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: PAM passes back the appdata_ptr we gave pam_start: our boxed conversation,
        // which lives as long as the handle; PAM calls us from the thread using the handle.
        let conversation = unsafe { &mut **appdata.cast::<Box<dyn Conversation>>() };
        // SAFETY: Linux-PAM's layout: `messages` points to `count` pointers to messages.
        unsafe { answer(conversation, count, messages, responses) }
    }));
    result.unwrap_or(PAM_CONV_ERR)
}

/// # Safety
/// `messages` must point to `count` valid message pointers and `responses` to writable storage
/// for one pointer, as pam_conv(3) describes.
unsafe fn answer(
    conversation: &mut dyn Conversation,
    count: c_int,
    messages: *mut *const PamMessage,
    responses: *mut *mut PamResponse,
) -> c_int {
    if !(1..=PAM_MAX_NUM_MSG).contains(&count) || messages.is_null() || responses.is_null() {
        return PAM_CONV_ERR;
    }
    let count = count as usize;
    // SAFETY: calloc of `count` zeroed responses; PAM frees the array and every `resp`.
    let replies = unsafe { libc::calloc(count, size_of::<PamResponse>()) }.cast::<PamResponse>();
    if replies.is_null() {
        return PAM_BUF_ERR;
    }
    // SAFETY: `count` zeroed PamResponse values (null pointer, 0) are valid, and the memory is
    // ours until handed to PAM below.
    let slots = unsafe { std::slice::from_raw_parts_mut(replies, count) };
    // SAFETY: per the contract, `messages` points to `count` message pointers.
    let messages = unsafe { std::slice::from_raw_parts(messages, count) };
    let fail = |slots: &mut [PamResponse], code| {
        for slot in slots.iter_mut().filter(|slot| !slot.resp.is_null()) {
            // SAFETY: every non-null resp was allocated below with malloc, NUL-terminated.
            unsafe { wipe_and_free(slot.resp) };
        }
        // SAFETY: allocated above with calloc, not yet given to PAM.
        unsafe { libc::free(replies.cast()) };
        code
    };
    for (i, message) in messages.iter().enumerate() {
        // SAFETY: PAM keeps each message alive for the duration of the call.
        let message = unsafe { &**message };
        let text = if message.msg.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string from PAM.
            unsafe { CStr::from_ptr(message.msg) }
                .to_string_lossy()
                .into_owned()
        };
        match message.msg_style {
            PAM_PROMPT_ECHO_OFF | PAM_PROMPT_ECHO_ON => {
                let echo = if message.msg_style == PAM_PROMPT_ECHO_OFF {
                    Echo::Off
                } else {
                    Echo::On
                };
                let Some(reply) = conversation.prompt(&text, echo) else {
                    return fail(slots, PAM_CONV_ERR);
                };
                if reply.expose().contains(&0) {
                    return fail(slots, PAM_CONV_ERR);
                }
                // SAFETY: malloc of len + 1 bytes for the copy and its NUL.
                let copy = unsafe { libc::malloc(reply.len() + 1) }.cast::<u8>();
                if copy.is_null() {
                    return fail(slots, PAM_BUF_ERR);
                }
                // SAFETY: `copy` is a fresh allocation of len + 1 bytes that we own.
                let target = unsafe { std::slice::from_raw_parts_mut(copy, reply.len() + 1) };
                target[..reply.len()].copy_from_slice(reply.expose());
                target[reply.len()] = 0;
                slots[i].resp = copy.cast();
            }
            PAM_TEXT_INFO => conversation.info(&text),
            PAM_ERROR_MSG => conversation.error(&text),
            // Radio and binary prompts: nothing here can answer them.
            _ => return fail(slots, PAM_CONV_ERR),
        }
    }
    // SAFETY: `responses` is writable per the contract; PAM now owns the array.
    unsafe { *responses = replies };
    PAM_SUCCESS
}
