//! The example policies in `examples/policies/` validate strictly against the
//! default schema, and together they decide realistic steps the way
//! `examples/policies/README.md` and `docs/POLICIES.md` say they do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hsync_policy::{validate_policy, EvalInput, PolicyEngine, Stage, DEFAULT_SCHEMA};
use serde_json::{json, Map, Value};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// `(id, text)` of every `examples/policies/*.cedar`, sorted by id.
fn example_policies() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(examples_dir())
        .expect("examples/policies exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .map(|p| {
            let id = p.file_stem().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&p).expect("readable policy file");
            (id, text)
        })
        .collect();
    out.sort();
    out
}

fn engine() -> PolicyEngine {
    PolicyEngine::new(example_policies(), Some(DEFAULT_SCHEMA))
        .expect("the example policies build together with the default schema")
}

const GEO_CAPS: &[&str] = &["geometry", "hyperbolic"];

struct Step {
    what: &'static str,
    principal: &'static str,
    stage: Stage,
    operator: &'static str,
    capabilities: &'static [&'static str],
    context: Value,
}

impl Step {
    fn decide(&self, engine: &PolicyEngine) -> hsync_policy::Decision {
        let capabilities: Vec<String> = self.capabilities.iter().map(|c| c.to_string()).collect();
        engine.evaluate(&EvalInput {
            principal: self.principal,
            stage: self.stage,
            operator: self.operator,
            capabilities: &capabilities,
            context: self.context.as_object().expect("context is an object"),
        })
    }
}

/// A pre-condition context shaped like the runner's (`step_context`) for two
/// 2-D points as JSON arrays, plus `extra`.
fn geo_pre(max_point_norm: f64, extra: Value) -> Value {
    let mut c = json!({
        "job_id": "job-1",
        "node_id": "path",
        "arg_count": 2,
        "input_size": 46,
        "dimension": 2,
        "max_point_norm": max_point_norm,
    });
    let extra = extra.as_object().cloned().unwrap_or_default();
    c.as_object_mut().unwrap().extend(extra);
    c
}

fn post(output_size: i64) -> Value {
    json!({
        "job_id": "job-1",
        "node_id": "out",
        "arg_count": 2,
        "input_size": 46,
        "output_size": output_size,
    })
}

#[test]
fn every_example_validates_strictly_against_the_default_schema() {
    let policies = example_policies();
    assert!(policies.len() >= 6, "expected the documented examples, found {policies:?}");
    for (id, text) in &policies {
        if let Err(e) = validate_policy(id, text, Some(DEFAULT_SCHEMA)) {
            panic!("examples/policies/{id}.cedar: {e}");
        }
    }
    // One engine holds them all (ids are unique, each file is one policy).
    assert_eq!(engine().policy_ids().len(), policies.len());
}

#[test]
fn the_readme_lists_every_example() {
    let readme = std::fs::read_to_string(examples_dir().join("README.md")).unwrap();
    for (id, _) in example_policies() {
        assert!(readme.contains(&format!("`{id}`")), "README.md does not list `{id}`");
    }
    for file in request_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(readme.contains(&name), "README.md does not list requests/{name}");
    }
}

#[test]
fn the_examples_decide_realistic_steps() {
    let engine = engine();
    let steps = [
        // (step, allowed, deciding policies)
        (Step { what: "a member runs a geodesic inside the ball", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.5385, json!({"n": 4})) }, true, vec!["baseline-permit"]),
        (Step { what: "curvature within bounds", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"c": 0.5})) }, true, vec!["baseline-permit"]),
        // A whole number for a declared decimal becomes 1.0, the (inclusive) upper bound.
        (Step { what: "curvature 1 written as an integer", principal: "alice", stage: Stage::Pre, operator: "geo.poincare.distance", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"c": 1})) }, true, vec!["baseline-permit"]),
        (Step { what: "curvature above 1", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"c": 2.0})) }, false, vec!["curvature-bounds"]),
        (Step { what: "curvature nearly flat", principal: "alice", stage: Stage::Pre, operator: "geo.poincare.distance", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"c": 0.05})) }, false, vec!["curvature-bounds"]),
        (Step { what: "a point outside the ball", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(1.2042, json!({})) }, false, vec!["points-inside-ball"]),
        (Step { what: "a point just inside, at 4 digits", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.9999, json!({})) }, true, vec!["baseline-permit"]),
        // 0.99996 (10.6 from the origin) rounds down to the decimal 0.9999: inside.
        (Step { what: "a point near the boundary", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.99996, json!({})) }, true, vec!["baseline-permit"]),
        (Step { what: "a point on the boundary", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(1.0, json!({})) }, false, vec!["points-inside-ball"]),
        (Step { what: "an embedding from an edge list (no points)", principal: "alice", stage: Stage::Pre, operator: "geo.embed", capabilities: GEO_CAPS, context: json!({"job_id": "job-1", "node_id": "tree", "arg_count": 1, "input_size": 40, "tau": 1.5}) }, true, vec!["baseline-permit"]),
        (Step { what: "a hyperbolic step without points", principal: "alice", stage: Stage::Pre, operator: "geo.poincare.distance", capabilities: GEO_CAPS, context: json!({"job_id": "job-1", "node_id": "d", "arg_count": 0, "input_size": 0}) }, false, vec!["points-inside-ball"]),
        (Step { what: "a non-member runs a hyperbolic operator", principal: "mallory", stage: Stage::Pre, operator: "geo.poincare.distance", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({})) }, false, vec!["hyperbolic-principals"]),
        (Step { what: "a non-member runs vector math", principal: "mallory", stage: Stage::Pre, operator: "vec.add", capabilities: &["math"], context: geo_pre(3.0, json!({})) }, true, vec!["baseline-permit"]),
        (Step { what: "a member asks for 5000 geodesic points", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"n": 5000})) }, false, vec!["geodesic-points"]),
        (Step { what: "the pipeline asks for 5000 geodesic points", principal: "geo-pipeline", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"n": 5000})) }, true, vec!["baseline-permit"]),
        // The geodesic limit is on that operator only.
        (Step { what: "a distance with an `n` parameter", principal: "alice", stage: Stage::Pre, operator: "geo.poincare.distance", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"n": 5000})) }, true, vec!["baseline-permit"]),
        (Step { what: "a small output", principal: "alice", stage: Stage::Post, operator: "geo.geodesic", capabilities: GEO_CAPS, context: post(80) }, true, vec!["baseline-permit"]),
        (Step { what: "a compute operator returns 8 MiB", principal: "alice", stage: Stage::Post, operator: "mat.matmul", capabilities: &["math"], context: post(8_388_624) }, false, vec!["large-outputs"]),
        (Step { what: "exactly 1 MiB is not above the limit", principal: "alice", stage: Stage::Post, operator: "mat.matmul", capabilities: &["math"], context: post(1_048_576) }, true, vec!["baseline-permit"]),
        (Step { what: "a data operator returns 8 MiB", principal: "alice", stage: Stage::Post, operator: "data.decompress", capabilities: &["data", "compression"], context: post(8_388_624) }, true, vec!["baseline-permit"]),
        // Pre-only restrictions do not apply after the step ran.
        (Step { what: "post of a hyperbolic step for a non-member", principal: "mallory", stage: Stage::Post, operator: "geo.poincare.distance", capabilities: GEO_CAPS, context: post(9) }, true, vec!["baseline-permit"]),
    ];
    for (step, allowed, policies) in &steps {
        let d = step.decide(&engine);
        assert!(d.errors.is_empty(), "{}: unexpected errors {:?}", step.what, d.errors);
        assert_eq!(d.allowed, *allowed, "{}: {d:?}", step.what);
        assert_eq!(&d.policies, policies, "{}", step.what);
    }

    // Three forbids match. The evaluator may stop at the first deny it finds, so the
    // decision names at least one of them and nothing else.
    let step = Step { what: "a non-member with a point outside", principal: "mallory", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(3.0, json!({"c": 5.0})) };
    let d = step.decide(&engine);
    assert!(!d.allowed && d.errors.is_empty(), "{d:?}");
    let matching = ["curvature-bounds", "hyperbolic-principals", "points-inside-ball"];
    assert!(!d.policies.is_empty(), "{d:?}");
    assert!(d.policies.iter().all(|p| matching.contains(&p.as_str())), "{d:?}");
}

/// Every attribute the runner sends, as it sends them (see `step_context` in
/// crates/runner/src/engine.rs), including parameters the schema does not
/// declare: those are dropped, not a reason to deny.
#[test]
fn a_runner_shaped_context_is_accepted() {
    let engine = engine();
    let pre = json!({
        "job_id": "0f9c2d0e-1b7a-4c1e-9d51-3f4a0c6b8e21",
        "node_id": "path",
        "arg_count": 5,
        "input_size": 73,
        "dimension": 2,
        "max_point_norm": 0.5385164807134504,
        "n": 4,
        "c": 0.75,
        "t": 0.25,
        "seed": 42,
    });
    let step = Step { what: "runner pre", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: pre.clone() };
    let d = step.decide(&engine);
    assert!(d.allowed && d.errors.is_empty(), "{d:?}");

    let mut post = pre;
    let extra = json!({"output_size": 85, "output_norm": 0.0, "output_value": 1.5});
    post.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let step = Step { what: "runner post", principal: "alice", stage: Stage::Post, operator: "geo.geodesic", capabilities: GEO_CAPS, context: post };
    let d = step.decide(&engine);
    assert!(d.allowed && d.errors.is_empty(), "{d:?}");

    // A declared parameter of the wrong type fails closed, naming the attribute,
    // rather than letting the curvature bound be skipped.
    let step = Step { what: "string curvature", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: geo_pre(0.5, json!({"c": "steep"})) };
    let d = step.decide(&engine);
    assert!(!d.allowed, "{d:?}");
    assert!(d.errors.iter().any(|e| e.contains("context.c")), "{d:?}");

    // The old nested shape is no help to a policy: with `max_point_norm` missing
    // the ball check refuses the step.
    let old = json!({"job_id": "j", "node_id": "n", "params": {"c": 0.5}, "arg_sizes": {"x": 23}, "dimension": 2});
    let step = Step { what: "old context", principal: "alice", stage: Stage::Pre, operator: "geo.geodesic", capabilities: GEO_CAPS, context: old };
    let d = step.decide(&engine);
    assert!(!d.allowed && d.errors.is_empty(), "{d:?}");
    assert_eq!(d.policies, ["points-inside-ball"]);
}

fn request_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir().join("requests"))
        .expect("examples/policies/requests exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The sample requests for `hsync policy test` decide as the README says.
#[test]
fn the_sample_requests_decide_as_documented() {
    let expected: BTreeMap<&str, (bool, &[&str])> = BTreeMap::from([
        ("geodesic-pre-allowed.json", (true, &["baseline-permit"][..])),
        ("geodesic-pre-outside-ball.json", (false, &["points-inside-ball"][..])),
        ("distance-pre-mallory.json", (false, &["hyperbolic-principals"][..])),
        ("matmul-post-large-output.json", (false, &["large-outputs"][..])),
    ]);
    let engine = engine();
    let files = request_files();
    assert_eq!(files.len(), expected.len(), "every sample request has an expectation: {files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let (allowed, policies) = expected
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no expectation for requests/{name}"));
        let q: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap())
            .unwrap_or_else(|e| panic!("requests/{name}: {e}"));
        let stage: Stage = serde_json::from_value(q["stage"].clone()).unwrap();
        let capabilities: Vec<String> = serde_json::from_value(q["capabilities"].clone()).unwrap();
        let empty = Map::new();
        let d = engine.evaluate(&EvalInput {
            principal: q["principal"].as_str().unwrap(),
            stage,
            operator: q["operator"].as_str().unwrap(),
            capabilities: &capabilities,
            context: q["context"].as_object().unwrap_or(&empty),
        });
        assert!(d.errors.is_empty(), "requests/{name}: {:?}", d.errors);
        assert_eq!(d.allowed, *allowed, "requests/{name}: {d:?}");
        assert_eq!(d.policies, *policies, "requests/{name}");
    }
}
