//! Keeps `proto-schemas/` (the contract document) honest against this crate.
//!
//! * every JSON Schema compiles (draft 2020-12, `$ref`s to sibling files resolved offline)
//!   and names a Rust type of this crate;
//! * every example validates against the schema its file-name prefix names, decodes through
//!   [`Codec`] as JSON into that Rust type, re-encodes to JSON that still validates, and
//!   round-trips through MessagePack (plain and zstd) to an equal value;
//! * the schemas and the decoder agree on which fields are required and that unknown
//!   fields are ignored;
//! * the deliberately broken examples fail both schema validation and decoding;
//! * `asyncapi.yaml` has a channel for every subject of [`Names::all_subjects`], every
//!   `$ref` in it resolves, and it references every schema.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use async_nats::HeaderMap;
use hsync_protocol::audit::{
    CheckpointQuery, CheckpointReply, ConsistencyQuery, ConsistencyReply, Empty, IndexStats, OperatorById, OperatorPage,
    OperatorReply, OperatorsQuery, ReceiptById,
    ReceiptByOperation, ReceiptPage, ReceiptReply, ReceiptsByJob, ReceiptsByTime,
};
use hsync_protocol::codec::headers;
use hsync_protocol::job::{ExtendJob, Job, JobResult, Node, NodeReport};
use hsync_protocol::operator::{ArgSpec, OperatorBatch, OperatorBatchReply, OperatorCall, OperatorDef, OperatorOutput, OperatorResult};
use hsync_protocol::policy::{PolicyDecision, PolicyEvalReply, PolicyEvalRequest, PolicyQuery};
use hsync_protocol::receipt::{Checkpoint, Receipt, SignedBatch, VerifierKeys};
use hsync_protocol::record::OperationRecord;
use hsync_protocol::{names, Arg, Codec, ErrorReply, Format, Names, Value};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value as Json;

/// Maps the name of every schema file (and example prefix) to the Rust type it describes.
macro_rules! message_types {
    ($($name:literal => $ty:ty,)*) => {
        /// Every schema name that has a Rust type.
        const TYPE_NAMES: &[&str] = &[$($name),*];

        /// Decodes `json` as the type named `name`; see [`roundtrip_as`].
        fn roundtrip(name: &str, json: &[u8]) -> Result<Json, String> {
            match name {
                $($name => roundtrip_as::<$ty>(json),)*
                other => Err(format!("no Rust type is mapped to the schema name `{other}`")),
            }
        }

        /// Only decodes (JSON), for the field-removal checks.
        fn decode_only(name: &str, json: &[u8]) -> Result<(), String> {
            match name {
                $($name => decode_json::<$ty>(json).map(|_| ()),)*
                other => Err(format!("no Rust type is mapped to the schema name `{other}`")),
            }
        }
    };
}

message_types! {
    "Job" => Job,
    "ExtendJob" => ExtendJob,
    "Node" => Node,
    "Arg" => Arg,
    "Value" => Value,
    "JobResult" => JobResult,
    "NodeReport" => NodeReport,
    "PolicyEvalRequest" => PolicyEvalRequest,
    "PolicyQuery" => PolicyQuery,
    "PolicyEvalReply" => PolicyEvalReply,
    "PolicyDecision" => PolicyDecision,
    "OperatorDef" => OperatorDef,
    "ArgSpec" => ArgSpec,
    "OperatorCall" => OperatorCall,
    "OperatorOutput" => OperatorOutput,
    "OperatorBatch" => OperatorBatch,
    "OperatorBatchReply" => OperatorBatchReply,
    "OperatorResult" => OperatorResult,
    "OperationRecord" => OperationRecord,
    "Receipt" => Receipt,
    "Checkpoint" => Checkpoint,
    "SignedBatch" => SignedBatch,
    "VerifierKeys" => VerifierKeys,
    "ReceiptByOperation" => ReceiptByOperation,
    "ReceiptsByJob" => ReceiptsByJob,
    "ReceiptById" => ReceiptById,
    "ReceiptsByTime" => ReceiptsByTime,
    "ReceiptReply" => ReceiptReply,
    "ReceiptPage" => ReceiptPage,
    "IndexStats" => IndexStats,
    "OperatorById" => OperatorById,
    "OperatorReply" => OperatorReply,
    "OperatorsQuery" => OperatorsQuery,
    "OperatorPage" => OperatorPage,
    "ConsistencyQuery" => ConsistencyQuery,
    "ConsistencyReply" => ConsistencyReply,
    "CheckpointQuery" => CheckpointQuery,
    "CheckpointReply" => CheckpointReply,
    "Empty" => Empty,
    "ErrorReply" => ErrorReply,
}

/// Schema files that hold shared definitions rather than a message.
const SHARED_SCHEMAS: &[&str] = &["common"];

/// The deliberately broken examples and a part of the decode error each must give.
const BROKEN: &[(&str, &str)] = &[
    ("Job.missing-nodes.json", "missing field `nodes`"),
    ("Node.op-and-operator.json", "duplicate field `op`"),
    ("ErrorReply.unknown-code.json", "unknown variant `OOPS`"),
    ("PolicyQuery.bad-stage.json", "unknown variant `during`"),
    ("OperationRecord.bad-hash.json", "invalid hex hash"),
    ("Receipt.bad-base64.json", "invalid base64"),
    ("IndexStats.negative.json", "invalid value: integer `-1`"),
];

// ---------------------------------------------------------------------------------------
// Files

fn root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto-schemas");
    p.canonicalize()
        .unwrap_or_else(|e| panic!("the contract directory {} is missing: {e}", p.display()))
}

fn schemas_dir() -> PathBuf {
    root().join("schemas")
}

fn examples_dir() -> PathBuf {
    root().join("examples")
}

/// The `*.json` files directly in `dir`, sorted; panics when there are none.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .json files in {}", dir.display());
    files
}

fn file_name(p: &Path) -> String {
    p.file_name().expect("a file name").to_string_lossy().into_owned()
}

/// `Job` for `Job.json` and for `Job.geodesic.json`.
fn type_prefix(p: &Path) -> String {
    file_name(p).split('.').next().expect("a prefix").to_string()
}

fn read_json(p: &Path) -> Json {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

fn read_asyncapi() -> Json {
    let p = root().join("asyncapi.yaml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------
// Schemas

/// Resolves `$ref`s to sibling schema files from disk; refuses anything else, so
/// compilation never touches the network.
struct LocalSchemas {
    dir: PathBuf,
}

impl jsonschema::Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &jsonschema::Uri<String>,
    ) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        if uri.scheme().as_str() != "file" {
            return Err(format!("refusing to fetch {uri}: only local schema files are allowed").into());
        }
        let path = PathBuf::from(uri.path().as_str());
        if !path.starts_with(&self.dir) {
            return Err(format!("refusing to read {}: outside {}", path.display(), self.dir.display()).into());
        }
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    }
}

fn compile(path: &Path) -> jsonschema::Validator {
    let schema = read_json(path);
    assert_eq!(
        schema.get("$schema").and_then(Json::as_str),
        Some("https://json-schema.org/draft/2020-12/schema"),
        "{} must declare draft 2020-12",
        path.display()
    );
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_base_uri(format!("file://{}", path.display()))
        .with_retriever(LocalSchemas { dir: schemas_dir() })
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {} does not compile: {e}", path.display()))
}

/// A compiled validator per message schema, by name.
fn validators() -> &'static HashMap<String, jsonschema::Validator> {
    static V: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    V.get_or_init(|| {
        json_files(&schemas_dir())
            .into_iter()
            .filter(|p| !SHARED_SCHEMAS.contains(&type_prefix(p).as_str()))
            .map(|p| (type_prefix(&p), compile(&p)))
            .collect()
    })
}

/// The schema's complaints about `instance` (empty when it is valid).
fn schema_errors(name: &str, instance: &Json) -> Vec<String> {
    let v = validators()
        .get(name)
        .unwrap_or_else(|| panic!("no schema file schemas/{name}.json"));
    v.iter_errors(instance)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

fn schema_json(name: &str) -> Json {
    read_json(&schemas_dir().join(format!("{name}.json")))
}

// ---------------------------------------------------------------------------------------
// Codec

fn json_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(headers::CONTENT_TYPE, headers::JSON);
    h
}

fn decode_json<T: DeserializeOwned>(json: &[u8]) -> Result<T, String> {
    Codec::default().decode(Some(&json_headers()), json).map_err(|e| e.to_string())
}

/// (b) decodes the JSON example into `T`, (c) re-encodes it as JSON (returned, to be
/// validated again; it must also decode to the same value), and (d) round-trips it
/// through MessagePack, uncompressed and zstd-compressed, to an equal value.
fn roundtrip_as<T: Serialize + DeserializeOwned + PartialEq + Debug>(json: &[u8]) -> Result<Json, String> {
    let decoded: T = decode_json(json)?;

    let (h, body) = Codec::uncompressed()
        .encode(&decoded, Format::Json)
        .map_err(|e| format!("JSON encode: {e}"))?;
    if Format::of(Some(&h)) != Format::Json {
        return Err("a JSON encoding is not marked application/json".into());
    }
    let reencoded: Json = serde_json::from_slice(&body).map_err(|e| format!("re-encoded JSON: {e}"))?;
    let again: T = Codec::default()
        .decode(Some(&h), &body)
        .map_err(|e| format!("decoding the re-encoded JSON: {e}"))?;
    if again != decoded {
        return Err(format!("JSON round trip changed the value:\n{decoded:?}\n{again:?}"));
    }

    let always_compress = Codec {
        compress_threshold: 0,
        ..Codec::default()
    };
    for (label, codec) in [("MessagePack", Codec::uncompressed()), ("zstd MessagePack", always_compress)] {
        let (h, body) = codec
            .encode(&decoded, Format::MsgPack)
            .map_err(|e| format!("{label} encode: {e}"))?;
        if Format::of(Some(&h)) != Format::MsgPack {
            return Err(format!("{label} is not marked as MessagePack"));
        }
        let back: T = Codec::default()
            .decode(Some(&h), &body)
            .map_err(|e| format!("{label} decode: {e}"))?;
        if back != decoded {
            return Err(format!("{label} round trip changed the value:\n{decoded:?}\n{back:?}"));
        }
    }
    Ok(reencoded)
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn every_schema_compiles_and_names_a_rust_type() {
    let files = json_files(&schemas_dir());
    let on_disk: BTreeSet<String> = files
        .iter()
        .map(|p| type_prefix(p))
        .filter(|n| !SHARED_SCHEMAS.contains(&n.as_str()))
        .collect();
    let mapped: BTreeSet<String> = TYPE_NAMES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        on_disk, mapped,
        "schema files and the Rust types mapped in this test differ"
    );
    assert_eq!(validators().len(), TYPE_NAMES.len());
    for f in &files {
        let s = read_json(f);
        let name = type_prefix(f);
        if !SHARED_SCHEMAS.contains(&name.as_str()) {
            assert_eq!(
                s.get("title").and_then(Json::as_str),
                Some(name.as_str()),
                "{} needs the title `{name}`",
                f.display()
            );
        }
    }
}

#[test]
fn every_example_validates_decodes_and_roundtrips() {
    let files = json_files(&examples_dir());
    let mut failures = Vec::new();
    for f in &files {
        let name = type_prefix(f);
        let bytes = std::fs::read(f).expect("readable example");
        let instance = read_json(f);
        if !TYPE_NAMES.contains(&name.as_str()) {
            failures.push(format!("{}: the prefix `{name}` names no message type", file_name(f)));
            continue;
        }
        // (a) the example is valid under its schema.
        let errors = schema_errors(&name, &instance);
        if !errors.is_empty() {
            failures.push(format!("{}: schema: {}", file_name(f), errors.join("; ")));
            continue;
        }
        // (b), (c), (d)
        match roundtrip(&name, &bytes) {
            Err(e) => failures.push(format!("{}: {e}", file_name(f))),
            Ok(reencoded) => {
                // Every field the Rust type writes is documented in the schema.
                let schema = schema_json(&name);
                if let (Json::Object(fields), Some(Json::Object(declared))) = (&reencoded, schema.get("properties")) {
                    for field in fields.keys().filter(|k| !declared.contains_key(*k)) {
                        failures.push(format!("{}: the Rust type writes `{field}`, which the schema does not declare", file_name(f)));
                    }
                }
                let errors = schema_errors(&name, &reencoded);
                if !errors.is_empty() {
                    failures.push(format!(
                        "{}: the re-encoded JSON fails the schema: {}\n{reencoded}",
                        file_name(f),
                        errors.join("; ")
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} example(s) failed:\n{}", failures.len(), failures.join("\n"));
    assert!(files.len() >= TYPE_NAMES.len(), "only {} examples", files.len());
}

#[test]
fn every_schema_has_an_example() {
    let examples: BTreeSet<String> = json_files(&examples_dir()).iter().map(|p| type_prefix(p)).collect();
    let missing: Vec<&&str> = TYPE_NAMES.iter().filter(|n| !examples.contains(**n)).collect();
    assert!(missing.is_empty(), "schemas without an example: {missing:?}");
}

/// The schema's `required` must be what the decoder requires: removing any one top-level
/// field of an example is rejected by the schema exactly when the decoder rejects it (and
/// then the decode error names the field), and an unknown field is accepted by both.
#[test]
fn schemas_and_decoder_agree_on_required_and_unknown_fields() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for f in json_files(&examples_dir()) {
        let name = type_prefix(&f);
        let Json::Object(example) = read_json(&f) else { continue };
        if name == "Value" || name == "Arg" {
            continue; // free-form maps, not structs
        }
        for key in example.keys() {
            let mut smaller = example.clone();
            smaller.remove(key);
            let smaller = Json::Object(smaller);
            let schema_ok = schema_errors(&name, &smaller).is_empty();
            let decoded = decode_only(&name, smaller.to_string().as_bytes());
            checked += 1;
            match (&decoded, schema_ok) {
                (Ok(()), true) => {}
                (Err(e), false) => {
                    // `op` and its alias `operator` are required as a pair (oneOf).
                    let alias_pair = name == "Node" && key == "operator";
                    if !alias_pair && !e.contains(&format!("missing field `{key}`")) {
                        failures.push(format!("{}: without `{key}` the decode error does not name it: {e}", file_name(&f)));
                    }
                }
                (Ok(()), false) => failures.push(format!(
                    "{}: without `{key}` the decoder accepts it but the schema rejects it (schema too strict)",
                    file_name(&f)
                )),
                (Err(e), true) => failures.push(format!(
                    "{}: without `{key}` the schema accepts it but the decoder says: {e} (schema too loose)",
                    file_name(&f)
                )),
            }
        }
        let mut bigger = example.clone();
        bigger.insert("x_field_from_the_future".into(), serde_json::json!({"nested": [1, 2.5, "x"]}));
        let bigger = Json::Object(bigger);
        let errors = schema_errors(&name, &bigger);
        if !errors.is_empty() {
            failures.push(format!("{}: the schema rejects an unknown field: {errors:?}", file_name(&f)));
        }
        if let Err(e) = decode_only(&name, bigger.to_string().as_bytes()) {
            failures.push(format!("{}: the decoder rejects an unknown field: {e}", file_name(&f)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(checked > 50, "only {checked} field removals checked");
}

#[test]
fn broken_examples_fail_schema_and_decoding() {
    let dir = examples_dir().join("invalid");
    let files = json_files(&dir);
    let on_disk: BTreeSet<String> = files.iter().map(|p| file_name(p)).collect();
    let listed: BTreeSet<String> = BROKEN.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(on_disk, listed, "every broken example needs an expected error in BROKEN");
    for (file, expected) in BROKEN {
        let path = dir.join(file);
        let name = type_prefix(&path);
        let instance = read_json(&path);
        assert!(
            !schema_errors(&name, &instance).is_empty(),
            "{file}: the schema accepts a broken {name}"
        );
        let err = decode_only(&name, &std::fs::read(&path).unwrap()).expect_err(&format!("{file}: decoded"));
        assert!(err.contains(expected), "{file}: decode error `{err}` lacks `{expected}`");
        assert!(err.contains(&format!("cannot decode {name}")), "{file}: `{err}` does not name {name}");
    }
    // The headline case, spelled out.
    let err = decode_only("Job", &std::fs::read(dir.join("Job.missing-nodes.json")).unwrap()).unwrap_err();
    assert!(err.contains("Job") && err.contains("nodes"), "{err}");
}

/// A receipt's leaf is the MessagePack of its operation record: the examples carry real
/// leaves, with the same record as the OperationRecord example.
#[test]
fn receipt_examples_carry_their_operation_records() {
    let batch: SignedBatch = decode_json(&std::fs::read(examples_dir().join("SignedBatch.job.json")).unwrap()).unwrap();
    assert!(!batch.receipts.is_empty());
    for r in &batch.receipts {
        let record = r.record().unwrap_or_else(|e| panic!("receipt {}: {e}", r.operation_id));
        assert_eq!(record.operation_id, r.operation_id);
        // Not `record.canonical_bytes() == leaf`: a receipt keeps the bytes it was issued
        // with, so it stays valid after OperationRecord gains a field.
        assert_eq!(r.tree_size, batch.checkpoint.tree_size);
        assert_eq!(r.checkpoint, batch.checkpoint.signed_note);
    }
    let receipt: Receipt = decode_json(&std::fs::read(examples_dir().join("Receipt.geodesic.json")).unwrap()).unwrap();
    let record: OperationRecord =
        decode_json(&std::fs::read(examples_dir().join("OperationRecord.executed.json")).unwrap()).unwrap();
    assert_eq!(receipt.record().unwrap(), record);
}

/// The Job example's references survive decoding as references.
#[test]
fn job_example_references_are_references() {
    let job: Job = decode_json(&std::fs::read(examples_dir().join("Job.geodesic.json")).unwrap()).unwrap();
    let geodesic = job.nodes.iter().find(|n| n.op.starts_with("geo.geodesic")).expect("a geodesic node");
    let Some(Arg::Ref(r)) = geodesic.args.get("x") else {
        panic!("geodesic x is not a reference: {:?}", geodesic.args.get("x"))
    };
    assert!(job.nodes.iter().any(|n| n.id == r.node), "reference to a missing node {}", r.node);
    let lit: Job = decode_json(&std::fs::read(examples_dir().join("Job.literal-ref.json")).unwrap()).unwrap();
    assert!(matches!(lit.nodes[0].args.get("value"), Some(Arg::Lit(Value::Map(m))) if m.contains_key("ref")));
}

#[test]
fn asyncapi_has_a_channel_for_every_subject() {
    let doc = read_asyncapi();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["title"], "HyperSync");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["servers"]["nats"]["protocol"], "nats");
    let channels = doc["channels"].as_object().expect("channels");
    let addresses: BTreeSet<&str> = channels.values().filter_map(|c| c["address"].as_str()).collect();
    let subjects = Names::default().all_subjects();
    assert!(subjects.len() > 5);
    for (subject, kind) in &subjects {
        assert!(addresses.contains(subject.as_str()), "no channel with address {subject} ({kind})");
    }
    for s in ["$SRV.PING.{service}", "$SRV.INFO.{service}", "$SRV.STATS.{service}"] {
        assert!(addresses.contains(s), "no channel {s}");
    }
    // Parameters of templated addresses are declared.
    for (id, c) in channels {
        let Some(address) = c["address"].as_str() else { continue };
        for param in address.split('{').skip(1).filter_map(|p| p.split('}').next()) {
            assert!(c["parameters"].get(param).is_some(), "channel {id} does not declare `{param}`");
        }
    }
    // Every request subject has an operation with a reply.
    let operations = doc["operations"].as_object().expect("operations");
    for (subject, kind) in subjects.iter().filter(|(_, k)| *k == "request") {
        let (channel_id, _) = channels
            .iter()
            .find(|(_, c)| c["address"] == subject.as_str())
            .expect("channel");
        let pointer = format!("#/channels/{channel_id}");
        let op = operations.values().find(|o| o["channel"]["$ref"] == pointer.as_str());
        let op = op.unwrap_or_else(|| panic!("no operation on {subject} ({kind})"));
        assert!(op.get("reply").is_some(), "the operation on {subject} has no reply");
        let replies = op["reply"]["messages"].as_array().expect("reply messages");
        assert!(
            replies.iter().any(|m| m["$ref"].as_str().is_some_and(|r| r.ends_with("/error"))),
            "the operation on {subject} cannot reply with an ErrorReply"
        );
    }
    for o in operations.values() {
        assert!(matches!(o["action"].as_str(), Some("send" | "receive")), "bad action in {o}");
    }
}

#[test]
fn asyncapi_documents_streams_buckets_and_headers() {
    let text = std::fs::read_to_string(root().join("asyncapi.yaml")).unwrap();
    let n = Names::default();
    let mut needles = vec![
        n.stream_jobs(),
        n.stream_records(),
        n.stream_receipts(),
        n.bucket_operators(),
        n.bucket_policies(),
        n.bucket_results(),
        n.consumer_signer(),
        n.consumer_indexer(),
        format!("`{}`", names::POLICY_SCHEMA_KEY),
        format!("`{}<id>`", names::POLICY_KEY_PREFIX),
        format!("prefix `{}`", names::DEFAULT_PREFIX),
    ];
    needles.extend(names::services::ALL.iter().map(|s| s.to_string()));
    needles.extend(
        [
            headers::CONTENT_TYPE,
            headers::CONTENT_ENCODING,
            headers::JSON,
            headers::MSGPACK,
            headers::ZSTD,
            headers::SERVICE_ERROR,
            headers::SERVICE_ERROR_CODE,
            headers::HSYNC_ERROR_CODE,
            headers::NATS_MSG_ID,
            "traceparent",
            "tracestate",
            "$SRV.PING",
            "$SRV.INFO",
            "$SRV.STATS",
        ]
        .map(String::from),
    );
    needles.extend(hsync_protocol::ErrorCode::ALL.iter().map(|c| c.as_str().to_string()));
    let missing: Vec<&String> = needles.iter().filter(|s| !text.contains(s.as_str())).collect();
    assert!(missing.is_empty(), "asyncapi.yaml does not mention {missing:?}");
    // The error-code enum of the schema is exactly ErrorCode::ALL, with its statuses.
    let common = schema_json("common");
    let codes: Vec<&str> = common["$defs"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let all: Vec<&str> = hsync_protocol::ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, all);
    let description = common["$defs"]["ErrorCode"]["description"].as_str().unwrap();
    for c in hsync_protocol::ErrorCode::ALL {
        assert!(description.contains(&c.status().to_string()), "status of {c} not documented");
    }
}

/// Collects every `$ref` string under `v`.
fn refs<'a>(v: &'a Json, out: &mut Vec<&'a str>) {
    match v {
        Json::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Json::String(s)) => out.push(s),
                    _ => refs(x, out),
                }
            }
        }
        Json::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

/// Follows a JSON pointer fragment (`/a/b`, `~1` and `~0` escaped) in `doc`.
fn follow<'a>(doc: &'a Json, fragment: &str) -> Option<&'a Json> {
    if fragment.is_empty() {
        return Some(doc);
    }
    doc.pointer(fragment)
}

#[test]
fn asyncapi_refs_resolve_and_cover_every_schema() {
    let doc = read_asyncapi();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 50, "only {} $refs in asyncapi.yaml", all.len());
    let mut files: BTreeMap<String, Json> = BTreeMap::new();
    let mut broken = Vec::new();
    for &r in &all {
        let (file, fragment) = r.split_once('#').unwrap_or((r, ""));
        if file.is_empty() {
            if follow(&doc, fragment).is_none() {
                broken.push(format!("{r}: no such place in asyncapi.yaml"));
            }
            continue;
        }
        if file.starts_with('/') || file.contains("://") || file.split('/').any(|p| p == "..") {
            broken.push(format!("{r}: must be relative, inside proto-schemas/"));
            continue;
        }
        let path = root().join(file);
        if !path.is_file() {
            broken.push(format!("{r}: no file {}", path.display()));
            continue;
        }
        let target = files.entry(file.to_string()).or_insert_with(|| read_json(&path));
        if follow(target, fragment).is_none() {
            broken.push(format!("{r}: no such place in {file}"));
        }
    }
    assert!(broken.is_empty(), "broken $refs:\n{}", broken.join("\n"));
    let referenced: BTreeSet<String> = files.keys().cloned().collect();
    for f in json_files(&schemas_dir()) {
        let rel = format!("schemas/{}", file_name(&f));
        assert!(referenced.contains(&rel), "asyncapi.yaml never references {rel}");
    }
    // Every message's payload is a schema file (or an inline schema for NATS micro).
    for (id, m) in doc["components"]["messages"].as_object().unwrap() {
        assert!(m.get("payload").is_some(), "message {id} has no payload");
    }
}

/// Every `$ref` inside the schema files is internal or names an existing sibling file.
#[test]
fn schema_refs_stay_local() {
    let mut count = 0;
    for f in json_files(&schemas_dir()) {
        let s = read_json(&f);
        let mut all = Vec::new();
        refs(&s, &mut all);
        for r in all {
            count += 1;
            let (file, fragment) = r.split_once('#').unwrap_or((r, ""));
            let target = if file.is_empty() {
                s.clone()
            } else {
                assert!(!file.contains('/'), "{}: `{r}` must name a sibling file", file_name(&f));
                let p = schemas_dir().join(file);
                assert!(p.is_file(), "{}: `{r}` names a missing file", file_name(&f));
                read_json(&p)
            };
            assert!(follow(&target, fragment).is_some(), "{}: `{r}` leads nowhere", file_name(&f));
        }
    }
    assert!(count > 20, "only {count} $refs in the schemas");
}
