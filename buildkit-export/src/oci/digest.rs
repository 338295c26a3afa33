//! Content digests (`sha256:<hex>`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::error::{Error, ErrorKind};

/// A content digest as written in OCI descriptors: `sha256:` and 64 lowercase hex digits.
///
/// Only sha256 is accepted: it is what BuildKit, containerd and Docker write, and the
/// only algorithm this reader can verify.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The sha256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    pub(crate) fn from_sha256(sum: [u8; 32]) -> Self {
        let mut s = String::with_capacity(7 + 64);
        s.push_str("sha256:");
        for b in sum {
            s.push(char::from_digit(u32::from(b >> 4), 16).expect("nibble"));
            s.push(char::from_digit(u32::from(b & 0xf), 16).expect("nibble"));
        }
        Self(s)
    }

    /// The digest for a hex string (64 lowercase hex digits, no `sha256:` prefix).
    pub(crate) fn from_hex(hex: &str) -> Option<Self> {
        is_sha256_hex(hex).then(|| Self(format!("sha256:{hex}")))
    }

    /// The algorithm part (always `sha256`).
    pub fn algorithm(&self) -> &str {
        "sha256"
    }

    /// The hex part, without the `sha256:` prefix.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The whole digest, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where an OCI image layout stores this blob: `blobs/sha256/<hex>`.
    pub fn blob_path(&self) -> String {
        format!("blobs/sha256/{}", self.hex())
    }
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| {
            Error::new(ErrorKind::InvalidDigest {
                value: s.chars().take(100).collect(),
                reason: reason.to_string(),
            })
        };
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(invalid("expected `<algorithm>:<hex>`"));
        };
        if algorithm != "sha256" {
            return Err(invalid("only sha256 digests are supported"));
        }
        Self::from_hex(hex).ok_or_else(|| invalid("expected 64 lowercase hex digits"))
    }
}

impl TryFrom<String> for Digest {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn parse_rejects_other_algorithms_and_bad_hex() {
        let ok = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = ok.parse().unwrap();
        assert_eq!(d.hex(), &ok[7..]);
        assert_eq!(d.blob_path(), format!("blobs/sha256/{}", &ok[7..]));
        for bad in [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "sha256:../../etc/passwd",
        ] {
            let err = bad.parse::<Digest>().unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::InvalidDigest { .. }),
                "{bad}: {err}"
            );
        }
    }
}
