//! Content digests (`sha256:<64 hex>`), validated on construction.

use sha2::Digest as _;
use std::fmt;
use std::io;
use std::str::FromStr;

/// A validated content digest. Only `sha256` is accepted: it is the only algorithm kiln writes,
/// and accepting arbitrary algorithm strings is how path-traversal digests (`sha256:../../x`,
/// CVE-2023-25153) reach file-system paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Invalid(String),
    #[error("unsupported digest algorithm in {0:?}: only sha256 is supported")]
    UnsupportedAlgorithm(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest {
            hex: hex::encode(sha2::Sha256::digest(bytes)),
        }
    }

    /// Builds a digest from 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Digest {
                hex: hex.to_string(),
            })
        } else {
            Err(DigestError::Invalid(hex.to_string()))
        }
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// The hex part: safe to use as a file name (validated: 64 of `[0-9a-f]`).
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sha256", hex)) => {
                Digest::from_hex(hex).map_err(|_| DigestError::Invalid(s.to_string()))
            }
            Some((alg, _))
                if !alg.is_empty()
                    && alg
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+._-".contains(&b)) =>
            {
                Err(DigestError::UnsupportedAlgorithm(s.to_string()))
            }
            _ => Err(DigestError::Invalid(s.to_string())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A sha256 hasher that is also an `io::Write` pass-through: wrap a writer to hash what goes
/// through it (hash while writing), or feed it directly.
pub struct Hasher<W = io::Sink> {
    inner: W,
    sha: sha2::Sha256,
    len: u64,
}

impl Hasher<io::Sink> {
    /// A hasher that only hashes.
    pub fn new() -> Self {
        Hasher::wrap(io::sink())
    }
}

impl Default for Hasher<io::Sink> {
    fn default() -> Self {
        Hasher::new()
    }
}

impl<W> Hasher<W> {
    /// Hashes everything written through to `inner`.
    pub fn wrap(inner: W) -> Self {
        Hasher {
            inner,
            sha: sha2::Sha256::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Feeds bytes without writing them anywhere.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// The digest, the byte count and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let hex = hex::encode(self.sha.finalize());
        (Digest { hex }, self.len, self.inner)
    }
}

impl<W: io::Write> io::Write for Hasher<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.to_string().len(), 71);
    }

    #[test]
    fn rejects_traversal_and_bad_hex() {
        for bad in [
            "sha256:../../x",
            "sha256:",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad} accepted");
        }
        assert!(matches!(
            "sha512:abcd".parse::<Digest>(),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
    }

    #[test]
    fn hasher_passes_bytes_through() {
        use std::io::Write;
        let mut h = Hasher::wrap(Vec::new());
        h.write_all(b"hello").unwrap();
        let (d, n, out) = h.finish();
        assert_eq!(
            (d, n, out.as_slice()),
            (Digest::of(b"hello"), 5, &b"hello"[..])
        );
    }
}
