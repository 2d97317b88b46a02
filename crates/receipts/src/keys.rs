//! Ed25519 signing keys for checkpoints, and their on-disk form.
//!
//! A signing key is stored as **PEM-encoded PKCS#8 v2** (`-----BEGIN PRIVATE
//! KEY-----`, as written by ring; `openssl pkey -in <file> -noout -text` can
//! read it). The key *name* is not stored in the file: it is the log's
//! origin and comes from configuration, so the same key file can't silently
//! change identity.
//!
//! Files are written atomically (temp file created with mode 0600 in the same
//! directory, fsync, rename) so a crash never leaves a truncated key, and a
//! key file readable by group/other is refused rather than used: a leaked
//! log key lets anyone forge checkpoints.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::note::{validate_key_name, KeyParseError, VerifierKey};

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// PKCS#8 v2 (RFC 5958) Ed25519 layout, as in ring's own template:
/// `SEQUENCE { version 1, AlgorithmIdentifier id-Ed25519, OCTET STRING {
/// OCTET STRING seed }, [1] publicKey }`.
const PKCS8_V2_PREFIX: &[u8] = &[
    0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
const PKCS8_V2_MIDDLE: &[u8] = &[0x81, 0x21, 0x00];
/// A PEM Ed25519 key is ~120 bytes; anything far larger is not our file.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Errors loading, generating or saving keys. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Filesystem error, with what we were doing and where.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The key file is accessible to group or other users.
    #[error(
        "refusing to use signing key {}: its mode is {mode:04o}, which grants access to group/other; run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    InsecurePermissions { path: PathBuf, mode: u32 },
    /// The path exists but is not a regular file.
    #[error("signing key path {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    /// The file content is not a PEM PKCS#8 v2 Ed25519 key.
    #[error("signing key file {} is not a PEM PKCS#8 Ed25519 key: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// The key name is not a valid note key name.
    #[error("invalid key name: {0}")]
    InvalidName(#[from] KeyParseError),
    /// ring could not produce or parse a key (e.g. no OS randomness).
    #[error("key operation failed: {0}")]
    Crypto(String),
}

/// A named Ed25519 key pair that signs checkpoints.
pub struct SigningKey {
    name: String,
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
    verifier: VerifierKey,
}

impl fmt::Debug for SigningKey {
    /// Never prints secret material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("verifier", &self.verifier.to_string())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generate a fresh key with the system CSPRNG.
    pub fn generate(name: &str) -> Result<Self, KeyError> {
        validate_key_name(name)?;
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| KeyError::Crypto("Ed25519 key generation failed".into()))?;
        Self::from_pkcs8(name, doc.as_ref()).map_err(KeyError::Crypto)
    }

    /// Deterministic key from a 32-byte Ed25519 seed (RFC 8032 secret key),
    /// e.g. for test fixtures or keys held in a secret manager. The seed is
    /// wrapped in the same PKCS#8 v2 form that ring generates.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        validate_key_name(name)?;
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| KeyError::Crypto(format!("invalid Ed25519 seed: {e}")))?;
        let mut der = Vec::with_capacity(PKCS8_V2_PREFIX.len() + 32 + PKCS8_V2_MIDDLE.len() + 32);
        der.extend_from_slice(PKCS8_V2_PREFIX);
        der.extend_from_slice(seed);
        der.extend_from_slice(PKCS8_V2_MIDDLE);
        der.extend_from_slice(pair.public_key().as_ref());
        Self::from_pkcs8(name, &der).map_err(KeyError::Crypto)
    }

    /// Build from PKCS#8 v2 DER bytes (the form ring generates).
    fn from_pkcs8(name: &str, der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|e| format!("ring rejected it: {e}"))?;
        let mut pk = [0u8; 32];
        pk.copy_from_slice(pair.public_key().as_ref());
        let verifier = VerifierKey::new(name, pk).map_err(|e| e.to_string())?;
        Ok(SigningKey {
            name: name.to_string(),
            pkcs8: der.to_vec(),
            pair,
            verifier,
        })
    }

    /// The key name (used in signature lines; normally the log origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        *self.verifier.public_key()
    }

    /// The matching verifier key (publish its `to_string()`).
    pub fn verifier_key(&self) -> VerifierKey {
        self.verifier.clone()
    }

    /// The 4-byte key id, as in the verifier key and signature lines.
    pub fn key_id(&self) -> [u8; 4] {
        self.verifier.key_id()
    }

    /// Raw Ed25519 signature over `msg` (deterministic, RFC 8032).
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(msg).as_ref());
        out
    }

    fn to_pem(&self) -> String {
        let b64 = B64.encode(&self.pkcs8);
        let mut pem = String::with_capacity(b64.len() + 80);
        pem.push_str(PEM_BEGIN);
        pem.push('\n');
        // 64-character lines, as RFC 7468 requires.
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');
        pem
    }

    /// Load the key at `path`, or generate one and save it there if the file
    /// does not exist. Returns `true` in the second field when generated.
    ///
    /// An existing file must not be accessible to group/other (mode & 0o077
    /// == 0) and must be a PEM PKCS#8 v2 Ed25519 key. A new file is written
    /// atomically with mode 0600; missing parent directories are created
    /// with mode 0700.
    pub fn load_or_generate(path: &Path, name: &str) -> Result<(Self, bool), KeyError> {
        validate_key_name(name)?;
        match File::open(path) {
            Ok(file) => Ok((Self::load_from(file, path, name)?, false)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let key = Self::generate(name)?;
                write_atomic(path, key.to_pem().as_bytes(), 0o600, 0o700)?;
                Ok((key, true))
            }
            Err(source) => Err(KeyError::Io {
                action: "open signing key",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Load an existing key file (same checks as [`Self::load_or_generate`]).
    pub fn load(path: &Path, name: &str) -> Result<Self, KeyError> {
        validate_key_name(name)?;
        let file = File::open(path).map_err(|source| KeyError::Io {
            action: "open signing key",
            path: path.to_path_buf(),
            source,
        })?;
        Self::load_from(file, path, name)
    }

    fn load_from(file: File, path: &Path, name: &str) -> Result<Self, KeyError> {
        let io_err = |action| {
            let path = path.to_path_buf();
            move |source| KeyError::Io {
                action,
                path,
                source,
            }
        };
        // fstat the opened handle, so the checked file is the one we read.
        let meta = file.metadata().map_err(io_err("stat signing key"))?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let mut text = String::new();
        file.take(MAX_KEY_FILE)
            .read_to_string(&mut text)
            .map_err(io_err("read signing key"))?;
        let malformed = |reason: &str| KeyError::Malformed {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let body = text
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|s| s.strip_suffix(PEM_END))
            .ok_or_else(|| malformed("missing BEGIN/END PRIVATE KEY lines"))?;
        let b64: String = body.split_ascii_whitespace().collect();
        let der = B64
            .decode(b64)
            .map_err(|e| malformed(&format!("bad base64: {e}")))?;
        Self::from_pkcs8(name, &der).map_err(|r| malformed(&r))
    }

    /// Write the verifier key text (plus a newline) to `path`, atomically,
    /// mode 0644: it is public and meant to be distributed to verifiers.
    pub fn write_verifier_key(&self, path: &Path) -> Result<(), KeyError> {
        let text = format!("{}\n", self.verifier);
        write_atomic(path, text.as_bytes(), 0o644, 0o755)
    }
}

/// Read a file of verifier keys, one per line (blank lines and `#` comments
/// ignored): a keyring, e.g. the current key and the retired ones.
pub fn read_verifier_keys(path: &Path) -> Result<Vec<VerifierKey>, KeyError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE * 64).read_to_string(&mut text))
        .map_err(|source| KeyError::Io {
            action: "read verifier keys",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(parse_verifier_keys(&text)?)
}

/// Parse a keyring's text: one verifier key per line, blank lines and `#` comments
/// ignored. A bad line is an error naming its number, never a skipped key.
pub fn parse_verifier_keys(text: &str) -> Result<Vec<VerifierKey>, KeyParseError> {
    text.lines()
        .map(str::trim)
        .enumerate()
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| VerifierKey::parse(l).map_err(|e| KeyParseError(format!("line {}: {}", i + 1, e.0))))
        .collect()
}

/// Write verifier keys one per line, atomically, mode 0644 (they are public).
pub fn write_verifier_keys(path: &Path, keys: &[VerifierKey]) -> Result<(), KeyError> {
    let text: String = keys.iter().map(|k| format!("{k}\n")).collect();
    write_atomic(path, text.as_bytes(), 0o644, 0o755)
}

/// Replace the signing key at `key_path` with a new one (a new key id under the same
/// name), after adding the old verifier key to the keyring at `retired_path`, so that
/// checkpoints signed before stay verifiable. The retired key is recorded first: a crash
/// in between leaves the old key current and also listed, never lost.
pub fn rotate(key_path: &Path, name: &str, retired_path: &Path) -> Result<(SigningKey, VerifierKey), KeyError> {
    let old = SigningKey::load(key_path, name)?;
    let mut retired = match read_verifier_keys(retired_path) {
        Ok(keys) => keys,
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    if !retired.iter().any(|k| k.key_id() == old.key_id()) {
        retired.push(old.verifier_key());
    }
    write_verifier_keys(retired_path, &retired)?;
    let new = SigningKey::generate(name)?;
    write_atomic(key_path, new.to_pem().as_bytes(), 0o600, 0o700)?;
    Ok((new, old.verifier_key()))
}

/// Read a verifier key file as written by [`SigningKey::write_verifier_key`]
/// (surrounding whitespace is ignored).
pub fn read_verifier_key(path: &Path) -> Result<VerifierKey, KeyError> {
    let mut text = String::new();
    File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE).read_to_string(&mut text))
        .map_err(|source| KeyError::Io {
            action: "read verifier key",
            path: path.to_path_buf(),
            source,
        })?;
    Ok(VerifierKey::parse(text.trim())?)
}

/// Write `data` to `path` via a uniquely named temp file in the same
/// directory (created with `mode`, so the secret is never briefly
/// world-readable), fsync, then rename over `path`.
fn write_atomic(path: &Path, data: &[u8], mode: u32, dir_mode: u32) -> Result<(), KeyError> {
    let io_err = |action: &'static str, p: &Path| {
        let path = p.to_path_buf();
        move |source| KeyError::Io {
            action,
            path,
            source,
        }
    };
    let file_name = path.file_name().ok_or_else(|| KeyError::NotAFile {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(dir_mode)
        .create(&dir)
        .map_err(io_err("create directory", &dir))?;

    let mut nonce = [0u8; 8];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| KeyError::Crypto("system randomness unavailable".into()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        hex::encode(nonce)
    ));

    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("create temporary file", &tmp))?;
        f.write_all(data).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename temporary file onto", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    // Make the rename durable. Some filesystems refuse to fsync a directory;
    // the file itself is already complete, so that is not worth failing on.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn rotation_keeps_old_checkpoints_verifiable() {
        use crate::note::{open_checkpoint_with_any, sign_checkpoint, Checkpoint, NoteError};
        let dir = tempfile::tempdir().unwrap();
        let (key_path, retired) = (dir.path().join("signer.key"), dir.path().join("retired.vkeys"));
        let (old, _) = SigningKey::load_or_generate(&key_path, "hsync.test/log").unwrap();
        let cp = |size| Checkpoint { origin: "hsync.test/log".into(), size, root: [size as u8; 32] };
        let before = sign_checkpoint(&cp(1), &old).unwrap();

        let (new, retired_key) = rotate(&key_path, "hsync.test/log", &retired).unwrap();
        assert_ne!(new.key_id(), old.key_id(), "a rotation gives a new key id");
        assert_eq!(retired_key.key_id(), old.key_id());
        assert_eq!(mode(&key_path), 0o600);
        assert_eq!(SigningKey::load(&key_path, "hsync.test/log").unwrap().key_id(), new.key_id());
        let after = sign_checkpoint(&cp(2), &new).unwrap();

        // The keyring (current + retired) verifies both; the new key alone not the old note.
        let mut ring = vec![new.verifier_key()];
        ring.extend(read_verifier_keys(&retired).unwrap());
        assert_eq!(open_checkpoint_with_any(&before, &ring).unwrap().size, 1);
        assert_eq!(open_checkpoint_with_any(&after, &ring).unwrap().size, 2);
        let err = open_checkpoint_with_any(&before, &[new.verifier_key()]).unwrap_err();
        assert!(matches!(err, NoteError::NoSignature { .. }), "{err}");
        assert!(err.to_string().contains(&hex::encode(new.key_id())), "{err}");

        // A second rotation keeps both retired keys, once each.
        rotate(&key_path, "hsync.test/log", &retired).unwrap();
        let retired_keys = read_verifier_keys(&retired).unwrap();
        assert_eq!(retired_keys.len(), 2);
        assert_eq!(retired_keys[0].key_id(), old.key_id());
        assert_eq!(retired_keys[1].key_id(), new.key_id());
        // A bad line in a keyring is an error naming the problem, not a skipped key.
        fs::write(&retired, "# keys\nnot-a-key\n").unwrap();
        let err = read_verifier_keys(&retired).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn generate_writes_0600_and_reloads_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/keys/log.pem");
        let (key, generated) = SigningKey::load_or_generate(&path, "hsync.example/log").unwrap();
        assert!(generated);
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(PEM_BEGIN) && text.trim_end().ends_with(PEM_END));
        // No temp files left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);

        let (again, generated) = SigningKey::load_or_generate(&path, "hsync.example/log").unwrap();
        assert!(!generated);
        assert_eq!(again.public_key_bytes(), key.public_key_bytes());
        assert_eq!(again.verifier_key(), key.verifier_key());
        assert_eq!(again.key_id(), key.verifier_key().key_id());
        assert_eq!(again.sign(b"m"), key.sign(b"m"));
        assert_eq!(
            SigningKey::load(&path, "hsync.example/log")
                .unwrap()
                .public_key_bytes(),
            key.public_key_bytes()
        );
    }

    #[test]
    fn group_or_world_readable_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.pem");
        SigningKey::load_or_generate(&path, "log").unwrap();
        for bad in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(bad)).unwrap();
            let err = SigningKey::load_or_generate(&path, "log").unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, KeyError::InsecurePermissions { .. }), "{msg}");
            assert!(msg.contains("chmod 600"), "{msg}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{bad:04o}")), "{msg}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(SigningKey::load_or_generate(&path, "log").is_ok());
    }

    #[test]
    fn bad_files_and_names_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.pem");
        write_atomic(&path, b"not a key", 0o600, 0o700).unwrap();
        let err = SigningKey::load_or_generate(&path, "log").unwrap_err();
        assert!(matches!(err, KeyError::Malformed { .. }), "{err}");
        let pem = format!("{PEM_BEGIN}\nAAAA\n{PEM_END}\n");
        write_atomic(&path, pem.as_bytes(), 0o600, 0o700).unwrap();
        assert!(matches!(
            SigningKey::load(&path, "log"),
            Err(KeyError::Malformed { .. })
        ));
        assert!(matches!(
            SigningKey::load(dir.path(), "log"),
            Err(KeyError::NotAFile { .. })
        ));
        assert!(matches!(
            SigningKey::load(&dir.path().join("missing"), "log"),
            Err(KeyError::Io { .. })
        ));
        assert!(matches!(
            SigningKey::generate("has space"),
            Err(KeyError::InvalidName(_))
        ));
        assert!(matches!(
            SigningKey::generate("a+b"),
            Err(KeyError::InvalidName(_))
        ));
        assert!(matches!(
            SigningKey::generate(""),
            Err(KeyError::InvalidName(_))
        ));
    }

    #[test]
    fn verifier_key_file_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate("hsync.example/log").unwrap();
        let path = dir.path().join("pub/log.vkey");
        key.write_verifier_key(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", key.verifier_key())
        );
        assert_eq!(read_verifier_key(&path).unwrap(), key.verifier_key());
        assert!(format!("{key:?}").contains("hsync.example/log+"));
    }

    #[test]
    fn rfc8032_vectors_sign_exactly() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../../shared/testdata/ed25519/rfc8032-7.1.json"
        );
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("\n\nRFC 8032 TEST DATA MISSING: looked for {path} (the repository's sibling directory shared/testdata): {e}\n"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let vectors = json["vectors"].as_array().expect("vectors array");
        assert!(!vectors.is_empty());
        for v in vectors {
            let field = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
            let seed: [u8; 32] = field("secret_key").try_into().unwrap();
            let key = SigningKey::from_seed("rfc8032", &seed).unwrap();
            assert_eq!(key.public_key_bytes().to_vec(), field("public_key"));
            assert_eq!(
                key.sign(&field("message")).to_vec(),
                field("signature"),
                "{}",
                v["name"]
            );
        }
    }
}
