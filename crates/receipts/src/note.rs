//! C2SP signed notes and transparency-log checkpoints.
//!
//! Formats (<https://c2sp.org/signed-note>, <https://c2sp.org/tlog-checkpoint>),
//! byte-compatible with Go's `golang.org/x/mod/sumdb/note`:
//!
//! ```text
//! <origin>\n<size>\n<base64 root>\n      <- checkpoint body = the signed message
//! \n                                     <- blank line
//! — <key name> <base64(key id || signature)>\n   (one or more)
//! ```
//!
//! Verifier keys are written `<name>+<8 hex key id>+<base64(0x01 || pubkey)>`
//! where the key id is the first 4 bytes of
//! `SHA-256(name || "\n" || 0x01 || pubkey)`; the id lets a verifier pick its
//! signature line cheaply and binds the key to its name.
//!
//! Parsing is strict because a checkpoint is a commitment: anything we would
//! have to guess about (control characters, extension lines, non-canonical
//! numbers or base64, two signatures by the same key) is rejected with an
//! error that says which rule was broken. Nothing here panics on any input.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ring::digest::{digest, SHA256};
use ring::signature::{UnparsedPublicKey, ED25519};

use crate::keys::SigningKey;
use crate::merkle::Hash;

/// Notes larger than this are rejected before any parsing (a checkpoint is
/// ~100 bytes; the limit only bounds the work an attacker can cause).
pub const MAX_NOTE_SIZE: usize = 64 * 1024;
/// Same cap as the Go implementation: bounds the signature-parsing work.
pub const MAX_SIGNATURES: usize = 100;
/// Signature-algorithm byte for Ed25519 in key ids and verifier keys.
const ALG_ED25519: u8 = 0x01;
/// Every signature line starts with U+2014 EM DASH and a space.
const SIG_PREFIX: &str = "\u{2014} ";

/// Errors from building, signing or opening a signed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The input exceeds [`MAX_NOTE_SIZE`].
    #[error("note is {len} bytes, larger than the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    /// The signed-note envelope (blank line, signature lines) is malformed.
    #[error("malformed signed note: {0}")]
    Malformed(String),
    /// The note is well formed but carries no signature by the expected key.
    #[error("note has no signature by key {name}+{key_id}")]
    NoSignature { name: String, key_id: String },
    /// More than one signature line claims to be by the expected key, so it
    /// is ambiguous which one is meant.
    #[error("note has {count} signature lines for key {name}; expected exactly one")]
    DuplicateSignature { name: String, count: usize },
    /// A signature line for the expected key exists but does not verify.
    #[error("signature by key {name} does not verify over the note text")]
    BadSignature { name: String },
    /// The signed text is not a valid checkpoint body.
    #[error("malformed checkpoint body: {0}")]
    MalformedBody(String),
}

/// A verifier-key string or key name failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed verifier key: {0}")]
pub struct KeyParseError(pub String);

/// A tree head: "the log called `origin` has `size` leaves with this `root`".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Unique log identity; by convention the same as the signing key name.
    pub origin: String,
    /// Number of leaves in the tree.
    pub size: u64,
    /// RFC 6962 root hash of those leaves.
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint body: `"<origin>\n<size>\n<base64 root>\n"`.
    ///
    /// Does not validate `origin`; [`sign_checkpoint`] does.
    pub fn to_body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// Parse a checkpoint body. Extension lines are rejected: we never write
    /// them and silently ignoring signed data would be ambiguous.
    pub fn parse_body(body: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| Err(NoteError::MalformedBody(m.to_string()));
        if body.len() > MAX_NOTE_SIZE {
            return bad("body exceeds the note size limit");
        }
        if let Some(c) = body.chars().find(|&c| c < ' ' && c != '\n') {
            return Err(NoteError::MalformedBody(format!(
                "contains control character U+{:04X}",
                u32::from(c)
            )));
        }
        let Some(content) = body.strip_suffix('\n') else {
            return bad("body must end with a newline");
        };
        let lines: Vec<&str> = content.split('\n').collect();
        match lines.len() {
            3 => {}
            n if n < 3 => return bad("expected 3 lines: origin, tree size, root hash"),
            _ => return bad("unexpected extension lines after the root hash (not supported)"),
        }
        let origin = lines[0];
        if origin.is_empty() {
            return bad("origin line is empty");
        }
        let size = parse_size(lines[1]).map_err(NoteError::MalformedBody)?;
        let root = parse_root(lines[2]).map_err(NoteError::MalformedBody)?;
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
        })
    }
}

/// Decimal, no sign, no leading zeros (so each size has one spelling).
fn parse_size(s: &str) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("tree size {s:?} is not a decimal number"));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(format!("tree size {s:?} has leading zeros"));
    }
    s.parse::<u64>()
        .map_err(|_| format!("tree size {s:?} does not fit in 64 bits"))
}

fn parse_root(s: &str) -> Result<Hash, String> {
    let bytes = B64
        .decode(s)
        .map_err(|e| format!("root hash is not canonical standard base64: {e}"))?;
    Hash::try_from(bytes.as_slice())
        .map_err(|_| format!("root hash is {} bytes, expected 32", bytes.len()))
}

/// A key name as accepted by Go's `note` package: non-empty, no Unicode
/// whitespace, no `+` (the verifier-key field separator).
pub(crate) fn validate_key_name(name: &str) -> Result<(), KeyParseError> {
    if name.is_empty() {
        return Err(KeyParseError("key name is empty".into()));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyParseError(format!(
            "key name {name:?} contains whitespace or control characters"
        )));
    }
    if name.contains('+') {
        return Err(KeyParseError(format!("key name {name:?} contains '+'")));
    }
    Ok(())
}

/// `SHA-256(name || "\n" || 0x01 || pubkey)[..4]`.
pub(crate) fn compute_key_id(name: &str, public_key: &[u8; 32]) -> [u8; 4] {
    let mut msg = Vec::with_capacity(name.len() + 34);
    msg.extend_from_slice(name.as_bytes());
    msg.push(b'\n');
    msg.push(ALG_ED25519);
    msg.extend_from_slice(public_key);
    let d = digest(&SHA256, &msg);
    let mut id = [0u8; 4];
    id.copy_from_slice(&d.as_ref()[..4]);
    id
}

/// A named Ed25519 public key that can check signed notes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_id: [u8; 4],
    public_key: [u8; 32],
}

impl VerifierKey {
    /// Build from a name and raw public key (computes the key id).
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, KeyParseError> {
        validate_key_name(name)?;
        Ok(VerifierKey {
            name: name.to_string(),
            key_id: compute_key_id(name, &public_key),
            public_key,
        })
    }

    /// Parse `<name>+<8 hex key id>+<base64(0x01 || pubkey)>`. The key id
    /// must match the one computed from name and key, which catches
    /// copy-paste mistakes and keys renamed after the fact.
    pub fn parse(text: &str) -> Result<Self, KeyParseError> {
        let err = |m: String| Err(KeyParseError(m));
        if text.len() > 1024 {
            return err("key text is too long".into());
        }
        // The name has no '+', the hex id has none; base64 may contain '+'.
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return err("expected <name>+<key id>+<key>".into());
        };
        validate_key_name(name)?;
        if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return err(format!("key id {id_hex:?} is not 8 hex digits"));
        }
        let mut key_id = [0u8; 4];
        if hex::decode_to_slice(id_hex, &mut key_id).is_err() {
            return err(format!("key id {id_hex:?} is not 8 hex digits"));
        }
        let Ok(raw) = B64.decode(key_b64) else {
            return err("key is not canonical standard base64".into());
        };
        let Some((&alg, pk)) = raw.split_first() else {
            return err("key is empty".into());
        };
        if alg != ALG_ED25519 {
            return err(format!(
                "unsupported key algorithm byte 0x{alg:02x} (only Ed25519, 0x01)"
            ));
        }
        let Ok(public_key) = <[u8; 32]>::try_from(pk) else {
            return err(format!("Ed25519 key is {} bytes, expected 32", pk.len()));
        };
        let key = VerifierKey::new(name, public_key)?;
        if key.key_id != key_id {
            return err(format!(
                "key id {id_hex} does not match the name and key (expected {})",
                hex::encode(key.key_id)
            ));
        }
        Ok(key)
    }

    /// The key name (appears in signature lines).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key id (prefix of every signature by this key).
    pub fn key_id(&self) -> [u8; 4] {
        self.key_id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(msg, sig)
            .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(33);
        raw.push(ALG_ED25519);
        raw.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(raw)
        )
    }
}

impl FromStr for VerifierKey {
    type Err = KeyParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VerifierKey::parse(s)
    }
}

/// Sign arbitrary note text (must be non-empty, end in a newline and contain
/// no control characters other than newline), returning the signed note.
pub fn sign_note(text: &str, key: &SigningKey) -> Result<String, NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed(
            "note text must be non-empty and end with a newline".into(),
        ));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed(
            "note text contains control characters".into(),
        ));
    }
    let mut blob = Vec::with_capacity(68);
    blob.extend_from_slice(&key.key_id());
    blob.extend_from_slice(&key.sign(text.as_bytes()));
    let note = format!("{text}\n{SIG_PREFIX}{} {}\n", key.name(), B64.encode(blob));
    if note.len() > MAX_NOTE_SIZE {
        return Err(NoteError::TooLarge {
            len: note.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    Ok(note)
}

/// Sign a checkpoint, returning the full signed-note text. Fails (rather
/// than emit a note nobody could open) if the body would not parse back to
/// exactly this checkpoint, e.g. an empty origin or one containing newlines.
pub fn sign_checkpoint(checkpoint: &Checkpoint, key: &SigningKey) -> Result<String, NoteError> {
    let body = checkpoint.to_body();
    if Checkpoint::parse_body(&body)? != *checkpoint {
        return Err(NoteError::MalformedBody(format!(
            "origin {:?} does not round-trip through the checkpoint format",
            checkpoint.origin
        )));
    }
    sign_note(&body, key)
}

/// Check `note` carries exactly one valid signature by `key` and return the
/// signed text. Signatures by other keys are ignored (they may be witness
/// cosignatures) but must still be well-formed lines.
pub fn open_note<'a>(note: &'a str, key: &VerifierKey) -> Result<&'a str, NoteError> {
    let malformed = |m: &str| Err(NoteError::Malformed(m.to_string()));
    if note.len() > MAX_NOTE_SIZE {
        return Err(NoteError::TooLarge {
            len: note.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    if let Some(c) = note.chars().find(|&c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed(format!(
            "contains control character U+{:04X}",
            u32::from(c)
        )));
    }
    let Some(split) = note.rfind("\n\n") else {
        return malformed("no blank line between text and signatures");
    };
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    let Some(sigs) = sigs.strip_suffix('\n') else {
        return malformed("signature block is empty or does not end with a newline");
    };
    if sigs.is_empty() {
        return malformed("signature block is empty");
    }

    let mut matching: Vec<Vec<u8>> = Vec::new();
    for (n, line) in sigs.split('\n').enumerate() {
        if n >= MAX_SIGNATURES {
            return malformed("too many signature lines");
        }
        let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
            return Err(NoteError::Malformed(format!(
                "signature line {} does not start with \"— \"",
                n + 1
            )));
        };
        let Some((name, b64)) = rest.split_once(' ') else {
            return Err(NoteError::Malformed(format!(
                "signature line {} has no space between name and signature",
                n + 1
            )));
        };
        if validate_key_name(name).is_err() {
            return Err(NoteError::Malformed(format!(
                "signature line {} has an invalid key name",
                n + 1
            )));
        }
        let blob = match B64.decode(b64) {
            Ok(b) if b.len() >= 5 => b,
            _ => {
                return Err(NoteError::Malformed(format!(
                    "signature line {} is not base64 of key id and signature",
                    n + 1
                )))
            }
        };
        if name == key.name && blob[..4] == key.key_id {
            matching.push(blob[4..].to_vec());
        }
    }

    match matching.as_slice() {
        [] => Err(NoteError::NoSignature {
            name: key.name.clone(),
            key_id: hex::encode(key.key_id),
        }),
        [sig] => {
            if sig.len() == 64 && key.verify(text.as_bytes(), sig) {
                Ok(text)
            } else {
                Err(NoteError::BadSignature {
                    name: key.name.clone(),
                })
            }
        }
        many => Err(NoteError::DuplicateSignature {
            name: key.name.clone(),
            count: many.len(),
        }),
    }
}

/// Like [`open_checkpoint`] with whichever of `keys` signed the note (a keyring: the
/// current key and retired ones). With none of them, the error lists every key id tried.
pub fn open_checkpoint_with_any(note: &str, keys: &[VerifierKey]) -> Result<Checkpoint, NoteError> {
    for key in keys {
        match open_checkpoint(note, key) {
            Err(NoteError::NoSignature { .. }) => continue,
            other => return other,
        }
    }
    Err(NoteError::NoSignature {
        name: keys.first().map_or_else(|| "(no keys given)".to_string(), |k| k.name.clone()),
        key_id: keys.iter().map(|k| hex::encode(k.key_id)).collect::<Vec<_>>().join(" or "),
    })
}

/// Verify the signature by `key` on a signed checkpoint, then parse it. The
/// signature is checked before the body is parsed so unauthenticated bytes
/// never reach the parser's success path.
pub fn open_checkpoint(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
    let body = open_note(note, key)?;
    Checkpoint::parse_body(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Reference vector from Go's golang.org/x/mod/sumdb/note note_test.go.
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"; // 0x01 || seed
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const GO_SIG: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn go_signing_key() -> SigningKey {
        let raw = B64.decode(GO_SKEY_B64).unwrap();
        assert_eq!(raw[0], ALG_ED25519);
        SigningKey::from_seed("PeterNeumann", &raw[1..].try_into().unwrap()).unwrap()
    }

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint {
            origin: "hsync.example/log".into(),
            size,
            root: crate::merkle::leaf_hash(&size.to_be_bytes()),
        }
    }

    fn test_key(name: &str) -> SigningKey {
        SigningKey::from_seed(name, &[7u8; 32]).unwrap()
    }

    #[test]
    fn go_reference_vector_is_byte_compatible() {
        let vkey = VerifierKey::parse(GO_VKEY).unwrap();
        assert_eq!(vkey.to_string(), GO_VKEY);
        assert_eq!(hex::encode(vkey.key_id()), "c74f20a3");
        let note = format!("{GO_TEXT}\n{GO_SIG}");
        assert_eq!(open_note(&note, &vkey).unwrap(), GO_TEXT);
        // Signing the same text with the same seed reproduces Go's note.
        let sk = go_signing_key();
        assert_eq!(sk.verifier_key(), vkey);
        assert_eq!(sign_note(GO_TEXT, &sk).unwrap(), note);
        // It is not a checkpoint: the signature is fine, the body is not.
        assert!(matches!(
            open_checkpoint(&note, &vkey),
            Err(NoteError::MalformedBody(_))
        ));
        let tampered = note.replace("cryptography", "cryptographY");
        assert!(matches!(
            open_note(&tampered, &vkey),
            Err(NoteError::BadSignature { .. })
        ));
    }

    #[test]
    fn mangled_verifier_keys_are_rejected() {
        let b = GO_VKEY.as_bytes();
        for i in 0..=b.len() {
            for j in i + 1..=b.len() {
                if i != 0 || j != b.len() {
                    let s = String::from_utf8_lossy(&b[i..j]);
                    assert!(VerifierKey::parse(&s).is_err(), "accepted {s:?}");
                }
            }
        }
        let mut m = b.to_vec();
        for i in 0..m.len() {
            m[i] = m[i].wrapping_add(1);
            let s = String::from_utf8_lossy(&m);
            assert!(VerifierKey::parse(&s).is_err(), "accepted {s:?}");
            m[i] = m[i].wrapping_sub(1);
        }
        let err = VerifierKey::parse(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not match"), "{err}");
    }

    #[test]
    fn checkpoint_body_format() {
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 8,
            root: [0xab; 32],
        };
        let body = cp.to_body();
        assert_eq!(
            body,
            "example.com/log\n8\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n"
        );
        assert_eq!(Checkpoint::parse_body(&body).unwrap(), cp);
        let root = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
        for bad in [
            "",
            "\n",
            "example.com/log\n8\n",
            &format!("example.com/log\n8\n{root}"),
            &format!("\n8\n{root}\n"),
            &format!("example.com/log\n08\n{root}\n"),
            &format!("example.com/log\n+8\n{root}\n"),
            &format!("example.com/log\n-8\n{root}\n"),
            &format!("example.com/log\n 8\n{root}\n"),
            &format!("example.com/log\n18446744073709551616\n{root}\n"),
            "example.com/log\n8\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6t=\n",
            "example.com/log\n8\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urqw==\n",
            &format!("example.com/log\n8\n{root}\nextension\n"),
            &format!("example.com/log\r\n8\n{root}\n"),
        ] {
            assert!(
                matches!(
                    Checkpoint::parse_body(bad),
                    Err(NoteError::MalformedBody(_))
                ),
                "accepted {bad:?}"
            );
        }
        let max = format!("o\n{}\n{root}\n", u64::MAX);
        assert_eq!(Checkpoint::parse_body(&max).unwrap().size, u64::MAX);
    }

    #[test]
    fn sign_and_open_round_trip() {
        let sk = test_key("hsync.example/log");
        let vk = sk.verifier_key();
        assert_eq!(VerifierKey::parse(&vk.to_string()).unwrap(), vk);
        let cp = checkpoint(42);
        let note = sign_checkpoint(&cp, &sk).unwrap();
        assert!(note.starts_with(&format!("{}\n— hsync.example/log ", cp.to_body())));
        assert_eq!(open_checkpoint(&note, &vk).unwrap(), cp);
        // A cosignature by another key is ignored, before or after ours.
        let witness = SigningKey::from_seed("witness.example", &[9u8; 32]).unwrap();
        let wsig = sign_note(&cp.to_body(), &witness).unwrap();
        let wline = wsig.rsplit_once("\n\n").unwrap().1;
        assert_eq!(open_checkpoint(&format!("{note}{wline}"), &vk).unwrap(), cp);
        let (body, ours) = note.rsplit_once("\n\n").unwrap();
        assert_eq!(
            open_checkpoint(&format!("{body}\n\n{wline}{ours}"), &vk).unwrap(),
            cp
        );
        assert_eq!(
            open_checkpoint(&format!("{note}{wline}"), &witness.verifier_key()).unwrap(),
            cp
        );
    }

    #[test]
    fn each_failure_has_its_own_error() {
        let sk = test_key("hsync.example/log");
        let vk = sk.verifier_key();
        let note = sign_checkpoint(&checkpoint(5), &sk).unwrap();

        let other = SigningKey::from_seed("hsync.example/log", &[8u8; 32]).unwrap();
        assert!(matches!(
            open_checkpoint(&note, &other.verifier_key()),
            Err(NoteError::NoSignature { .. })
        ));
        let forged = note.replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            open_checkpoint(&forged, &vk),
            Err(NoteError::BadSignature { .. })
        ));
        let body_only = checkpoint(5).to_body();
        assert!(matches!(
            open_checkpoint(&body_only, &vk),
            Err(NoteError::Malformed(_))
        ));
        assert!(matches!(
            open_checkpoint(&note.replace('—', "-"), &vk),
            Err(NoteError::Malformed(_))
        ));
        assert!(matches!(
            open_checkpoint(note.trim_end(), &vk),
            Err(NoteError::Malformed(_))
        ));
        let (_, line) = note.rsplit_once("\n\n").unwrap();
        assert!(matches!(
            open_checkpoint(&format!("{note}{line}"), &vk),
            Err(NoteError::DuplicateSignature { count: 2, .. })
        ));
        let signed_junk = sign_note("hello\nworld\n", &sk).unwrap();
        assert!(matches!(
            open_checkpoint(&signed_junk, &vk),
            Err(NoteError::MalformedBody(_))
        ));
        let huge = format!("{}{}", "x".repeat(MAX_NOTE_SIZE), note);
        assert!(matches!(
            open_checkpoint(&huge, &vk),
            Err(NoteError::TooLarge { .. })
        ));
        let many = format!("{note}{}", line.repeat(MAX_SIGNATURES));
        assert!(matches!(
            open_checkpoint(&many, &vk),
            Err(NoteError::Malformed(_))
        ));
        // Signing refuses checkpoints that could not be parsed back.
        let mut bad = checkpoint(1);
        bad.origin = "two\nlines".into();
        assert!(sign_checkpoint(&bad, &sk).is_err());
        bad.origin = String::new();
        assert!(sign_checkpoint(&bad, &sk).is_err());
    }

    proptest! {
        #[test]
        fn random_input_never_panics(s in "\\PC*", t in "[a-z0-9/\\n— +=]{0,200}") {
            let vk = test_key("k").verifier_key();
            let _ = open_checkpoint(&s, &vk);
            let _ = open_checkpoint(&t, &vk);
            let _ = VerifierKey::parse(&s);
            let _ = VerifierKey::parse(&t);
            let _ = Checkpoint::parse_body(&t);
        }

        #[test]
        fn mutated_notes_never_verify_differently(pos in any::<usize>(), c in any::<char>(), op in 0u8..3) {
            let sk = test_key("hsync.example/log");
            let cp = checkpoint(1234);
            let note = sign_checkpoint(&cp, &sk).unwrap();
            let mut chars: Vec<char> = note.chars().collect();
            let i = pos % chars.len();
            match op {
                0 => { chars.remove(i); }
                1 => chars.insert(i, c),
                _ => chars[i] = c,
            }
            let mutated: String = chars.into_iter().collect();
            if let Ok(got) = open_checkpoint(&mutated, &sk.verifier_key()) {
                prop_assert_eq!(got, cp);
            }
        }
    }
}
