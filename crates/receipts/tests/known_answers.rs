//! Known-answer tests against the shared RFC 6962 corpus (transparency-dev
//! constants and proof cases). The data lives outside the repository, in
//! `<repo>/../shared/testdata`; if it is missing these tests fail loudly
//! rather than pass without checking anything.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hsync_receipts::merkle::{
    consistency_proof, inclusion_proof, leaf_hash, root_from_leaf_hashes, verify_consistency,
    verify_inclusion, CompactRange, Hash,
};
use serde_json::Value;

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/testdata");

fn rfc6962_dir() -> PathBuf {
    let dir = Path::new(TESTDATA).join("rfc6962");
    assert!(
        dir.is_dir(),
        "\n\nKNOWN-ANSWER TEST DATA MISSING: looked for {} \
         (the repository's sibling directory shared/testdata/rfc6962). \
         Check out the shared test data next to the repository; \
         these tests refuse to pass without it.\n",
        dir.display()
    );
    dir
}

fn read_json(path: &Path) -> Value {
    let text =
        fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// All `*.json` files below `dir`, sorted, recursively.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("listing {}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Decode a base64 field that should hold a hash. `None` when it is not 32
/// bytes: the corpus (written for Go's `[]byte` API) uses placeholders such
/// as "", "WrongLeaf" or "don't care 1" that our `[u8; 32]` API cannot even
/// represent.
fn b64_hash(v: &Value, field: &str, file: &Path) -> Option<Hash> {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{}: field {field} missing", file.display()));
    let bytes = B64
        .decode(s)
        .unwrap_or_else(|e| panic!("{}: {field}: {e}", file.display()));
    Hash::try_from(bytes.as_slice()).ok()
}

/// `None` if any entry is not 32 bytes (see [`b64_hash`]).
fn b64_proof(v: &Value, file: &Path) -> Option<Vec<Hash>> {
    match &v["proof"] {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|p| {
                let s = p
                    .as_str()
                    .unwrap_or_else(|| panic!("{}: proof entry", file.display()));
                let bytes = B64
                    .decode(s)
                    .unwrap_or_else(|e| panic!("{}: proof: {e}", file.display()));
                Hash::try_from(bytes.as_slice()).ok()
            })
            .collect(),
        other => panic!("{}: unexpected proof {other}", file.display()),
    }
}

/// For consistency roots only: in the equal-size cases the verifier just
/// compares the two roots, so the corpus uses equal or unequal placeholders.
/// Map a non-32-byte placeholder injectively to a hash no real tree has:
/// equal stays equal, different stays different.
fn placeholder_root(v: &Value, field: &str, file: &Path) -> Hash {
    b64_hash(v, field, file).unwrap_or_else(|| {
        let raw = B64
            .decode(v[field].as_str().unwrap_or_default())
            .unwrap_or_default();
        leaf_hash(&[b"placeholder:".as_slice(), &raw].concat())
    })
}

fn u64_field(v: &Value, field: &str, file: &Path) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: field {field} is not a u64", file.display()))
}

/// The 8 reference leaves and the roots of their prefixes 0..=8.
fn reference_tree() -> (Vec<Hash>, Vec<Hash>) {
    let v = read_json(&rfc6962_dir().join("known-answers.json"));
    let leaves: Vec<Hash> = v["leaf_inputs_hex"]
        .as_array()
        .expect("leaf_inputs_hex")
        .iter()
        .map(|h| leaf_hash(&hex::decode(h.as_str().unwrap()).unwrap()))
        .collect();
    let roots: Vec<Hash> = v["root_hashes_hex"]
        .as_array()
        .expect("root_hashes_hex")
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    assert_eq!(roots.len(), leaves.len() + 1);
    (leaves, roots)
}

#[test]
fn known_roots() {
    let (leaves, roots) = reference_tree();
    assert!(!leaves.is_empty());
    let mut cr = CompactRange::new();
    for n in 0..=leaves.len() {
        assert_eq!(
            root_from_leaf_hashes(&leaves[..n]),
            roots[n],
            "reference root, size {n}"
        );
        assert_eq!(cr.root(), roots[n], "compact range root, size {n}");
        if n < leaves.len() {
            cr.append(leaves[n]);
        }
    }
    // Every split into two batches reproduces the known roots too.
    for split in 0..=leaves.len() {
        let mut cr = CompactRange::new();
        assert_eq!(cr.append_batch(&leaves[..split]).root, roots[split]);
        assert_eq!(cr.append_batch(&leaves[split..]).root, roots[leaves.len()]);
    }
    // Hard-coded fact (RFC 6962 test vector): the 8-leaf root.
    assert_eq!(
        hex::encode(roots[8]),
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    );
}

#[test]
fn inclusion_corpus() {
    let (leaves, roots) = reference_tree();
    let files = json_files(&rfc6962_dir().join("inclusion"));
    let (mut checked, mut cross_checked) = (0, 0);
    for file in &files {
        let v = read_json(file);
        let index = u64_field(&v, "leafIdx", file);
        let size = u64_field(&v, "treeSize", file);
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let (Some(root), Some(leaf), Some(proof)) = (
            b64_hash(&v, "root", file),
            b64_hash(&v, "leafHash", file),
            b64_proof(&v, file),
        ) else {
            // Not representable as SHA-256 values: rejected by the type system.
            assert!(
                want_err,
                "{}: non-32-byte hash in a valid case",
                file.display()
            );
            checked += 1;
            continue;
        };
        let got = verify_inclusion(index, size, &leaf, &proof, &root);
        assert_eq!(
            got.is_err(),
            want_err,
            "{} ({}): got {got:?}",
            file.display(),
            v["desc"]
        );
        // Valid proofs over the reference tree must equal our reference proofs.
        if !want_err && size as usize <= leaves.len() && roots[size as usize] == root {
            assert_eq!(
                inclusion_proof(index, &leaves[..size as usize]),
                proof,
                "{}",
                file.display()
            );
            cross_checked += 1;
        }
        checked += 1;
    }
    assert!(checked > 0, "no inclusion cases found under {TESTDATA}");
    assert!(
        cross_checked > 0,
        "no inclusion happy path matched the reference tree"
    );
    eprintln!("inclusion: {checked} files checked, {cross_checked} cross-checked");
}

#[test]
fn consistency_corpus() {
    let (leaves, roots) = reference_tree();
    let files = json_files(&rfc6962_dir().join("consistency"));
    let (mut checked, mut cross_checked) = (0, 0);
    for file in &files {
        let v = read_json(file);
        let size1 = u64_field(&v, "size1", file);
        let size2 = u64_field(&v, "size2", file);
        let root1 = placeholder_root(&v, "root1", file);
        let root2 = placeholder_root(&v, "root2", file);
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let Some(proof) = b64_proof(&v, file) else {
            assert!(
                want_err,
                "{}: non-32-byte proof hash in a valid case",
                file.display()
            );
            checked += 1;
            continue;
        };
        let got = verify_consistency(size1, size2, &proof, &root1, &root2);
        assert_eq!(
            got.is_err(),
            want_err,
            "{} ({}): got {got:?}",
            file.display(),
            v["desc"]
        );
        if !want_err
            && size2 as usize <= leaves.len()
            && roots[size2 as usize] == root2
            && roots[size1 as usize] == root1
        {
            assert_eq!(
                consistency_proof(size1, &leaves[..size2 as usize]),
                proof,
                "{}",
                file.display()
            );
            cross_checked += 1;
        }
        checked += 1;
    }
    assert!(checked > 0, "no consistency cases found under {TESTDATA}");
    assert!(
        cross_checked > 0,
        "no consistency happy path matched the reference tree"
    );
    eprintln!("consistency: {checked} files checked, {cross_checked} cross-checked");
}
