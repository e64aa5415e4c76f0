//! Secrets (passwords, conversation answers) in memory that is wiped when dropped.

use std::fmt;

use zeroize::Zeroizing;

/// Bytes that are overwritten with zeros when dropped, and never shown by `Debug`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Takes ownership of `bytes`; they are wiped when the secret is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        Secret(Zeroizing::new(bytes))
    }

    /// Copies `bytes` into a new secret.
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut buf = Zeroizing::new(Vec::with_capacity(bytes.len()));
        buf.extend_from_slice(bytes);
        Secret(buf)
    }

    /// The secret bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Self {
        Secret::copy_from(text.as_bytes())
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Self {
        Secret::new(text.into_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(7 bytes)");
        assert_eq!(secret.expose(), b"hunter2");
    }
}
