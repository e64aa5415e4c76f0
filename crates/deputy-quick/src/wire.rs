//! Calls and replies as the bytes on deputyd's socket: a Varlink message is one JSON object
//! and a NUL. The full CLI hands [`Method`] to zlink; the launcher, which has no zlink (it has
//! no std), uses [`encode_call`] and [`decode_reply`].

use alloc::format;
use alloc::vec::Vec;

use deputy_proto as proto;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::exit::Failure;

/// The calls `deputy` makes.
#[derive(Debug, Serialize)]
#[serde(tag = "method", content = "parameters")]
pub enum Method<'a> {
    /// `org.varlink.service.GetInfo`.
    #[serde(rename = "org.varlink.service.GetInfo")]
    GetInfo,
    /// `io.deputy.GetToken`.
    #[serde(rename = "io.deputy.GetToken")]
    GetToken,
    /// `io.deputy.Logon`.
    #[serde(rename = "io.deputy.Logon")]
    Logon(&'a proto::Logon),
    /// `io.deputy.CreateProcess`.
    #[serde(rename = "io.deputy.CreateProcess")]
    CreateProcess(&'a proto::CreateProcess),
    /// `io.deputy.Signal`.
    #[serde(rename = "io.deputy.Signal")]
    Signal(&'a proto::Signal),
    /// `io.deputy.ResizePty`.
    #[serde(rename = "io.deputy.ResizePty")]
    ResizePty(&'a proto::ResizePty),
    /// `io.deputy.ListSessions`.
    #[serde(rename = "io.deputy.ListSessions")]
    ListSessions,
    /// `io.deputy.Logoff`.
    #[serde(rename = "io.deputy.Logoff")]
    Logoff(&'a proto::Logoff),
}

/// A call on the wire.
#[derive(Serialize)]
struct Call<'a> {
    #[serde(flatten)]
    method: &'a Method<'a>,
    #[serde(skip_serializing_if = "core::ops::Not::not")]
    more: bool,
}

/// `method` as a message, its NUL included; `more` asks for a stream of replies.
pub fn encode_call(method: &Method<'_>, more: bool) -> Vec<u8> {
    // Serializing these types cannot fail: no maps with non-string keys, no floats.
    let mut bytes = serde_json::to_vec(&Call { method, more }).unwrap_or_default();
    bytes.push(0);
    bytes
}

/// Whether a reply is an error, and which.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    error: Option<&'a str>,
}

/// A reply that is not an error.
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct Reply<T> {
    #[serde(default)]
    parameters: Option<T>,
    #[serde(default)]
    continues: bool,
}

/// One reply (without its NUL): its parameters and whether more replies follow, or the
/// daemon's error.
pub fn decode_reply<T: DeserializeOwned>(message: &[u8]) -> Result<(T, bool), Failure> {
    let unexpected =
        |err: serde_json::Error| Failure::Other(format!("unexpected reply from deputyd: {err}"));
    let probe: Probe<'_> = serde_json::from_slice(message).map_err(unexpected)?;
    if probe.error.is_some() {
        let err: proto::Error = serde_json::from_slice(message).map_err(unexpected)?;
        return Err(Failure::Deputy(err));
    }
    let reply: Reply<T> = serde_json::from_slice(message).map_err(unexpected)?;
    let parameters = match reply.parameters {
        Some(parameters) => parameters,
        // A reply without parameters: what `T` makes of an empty object.
        None => serde_json::from_slice(b"{}").map_err(unexpected)?,
    };
    Ok((parameters, reply.continues))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use alloc::string::ToString;
    use alloc::vec;

    use super::*;

    #[test]
    fn calls_are_one_json_object_and_a_nul() {
        let create = proto::CreateProcess {
            argv: vec!["/bin/true".to_string()],
            stdin: Some(0),
            ..proto::CreateProcess::default()
        };
        let bytes = encode_call(&Method::CreateProcess(&create), true);
        assert_eq!(bytes.last(), Some(&0));
        let json: serde_json::Value = serde_json::from_slice(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "method": "io.deputy.CreateProcess",
                "parameters": {"argv": ["/bin/true"], "stdin": 0},
                "more": true,
            })
        );
        let plain = encode_call(&Method::ListSessions, false);
        assert_eq!(plain, b"{\"method\":\"io.deputy.ListSessions\"}\0");
    }

    #[test]
    fn replies_give_their_parameters_or_the_named_error() {
        let (event, continues): (proto::ProcessEvent, bool) =
            decode_reply(br#"{"parameters":{"pid":42,"session":"s1","pidfd":0},"continues":true}"#)
                .unwrap();
        assert_eq!(
            (event.pid, event.session.as_str(), continues),
            (42, "s1", true)
        );
        let (event, continues): (proto::ProcessEvent, bool) =
            decode_reply(br#"{"parameters":{"pid":42,"session":"s1","exit":{"code":3}}}"#).unwrap();
        assert_eq!(
            (event.exit.map(|e| e.shell_code()), continues),
            (Some(3), false)
        );
        let _: (proto::Empty, bool) = decode_reply(b"{}").unwrap();

        let refused = decode_reply::<proto::ProcessEvent>(
            br#"{"error":"io.deputy.ExecutableNotFound","parameters":{"program":"nope","path":"/usr/bin"}}"#,
        )
        .unwrap_err();
        assert_eq!(refused.code(), crate::exit::NOT_FOUND);
        assert!(matches!(
            refused,
            Failure::Deputy(proto::Error::ExecutableNotFound { .. })
        ));
    }

    #[test]
    fn garbage_and_unknown_errors_are_unexpected_replies() {
        for message in [
            &b"not json"[..],
            br#"{"error":"io.deputy.NoSuchThing","parameters":{}}"#,
            br#"{"parameters":{"pid":"forty-two"}}"#,
        ] {
            let failure = decode_reply::<proto::ProcessEvent>(message).unwrap_err();
            assert!(
                failure
                    .to_string()
                    .starts_with("unexpected reply from deputyd: "),
                "{failure}"
            );
            assert_eq!(failure.code(), crate::exit::ERROR);
        }
    }
}
