//! Unit and property tests. Each test asserts an outcome that a plausible bug
//! (wrong mapping, fail-open, lost id, panic) would change.

use super::*;
use proptest::prelude::*;
use serde_json::json;

fn ctx(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("test context must be an object, got {other}"),
    }
}

fn engine(policies: &[(&str, &str)]) -> PolicyEngine {
    PolicyEngine::new(
        policies
            .iter()
            .map(|(id, text)| (id.to_string(), text.to_string())),
        None,
    )
    .expect("test policies are valid")
}

fn schema_engine(policies: &[(&str, &str)]) -> PolicyEngine {
    PolicyEngine::new(
        policies
            .iter()
            .map(|(id, text)| (id.to_string(), text.to_string())),
        Some(DEFAULT_SCHEMA),
    )
    .expect("test policies validate against the default schema")
}

struct Step<'a> {
    principal: &'a str,
    stage: Stage,
    operator: &'a str,
    capabilities: Vec<String>,
    context: Map<String, Value>,
}

impl<'a> Step<'a> {
    fn new(context: Value) -> Self {
        Self {
            principal: "alice",
            stage: Stage::Pre,
            operator: "embed",
            capabilities: vec!["embedding".to_string()],
            context: ctx(context),
        }
    }

    fn run(&self, engine: &PolicyEngine) -> Decision {
        engine.evaluate(&EvalInput {
            principal: self.principal,
            stage: self.stage,
            operator: self.operator,
            capabilities: &self.capabilities,
            context: &self.context,
        })
    }
}

fn base() -> Value {
    json!({ "job_id": "j1", "node_id": "n1" })
}

fn with(extra: Value) -> Value {
    let mut v = base();
    if let (Value::Object(a), Value::Object(b)) = (&mut v, extra) {
        a.extend(b);
    }
    v
}

const PERMIT_ALL: &str = "permit(principal, action, resource);";

// ---------------------------------------------------------------- decisions

#[test]
fn permit_allows_and_names_the_policy() {
    let d = Step::new(base()).run(&engine(&[("allow-all", PERMIT_ALL)]));
    assert!(d.allowed);
    assert_eq!(d.policies, ["allow-all"]);
    assert!(d.errors.is_empty());
}

#[test]
fn no_matching_permit_denies_by_default() {
    let e = engine(&[(
        "bob-only",
        r#"permit(principal == Hsync::User::"bob", action, resource);"#,
    )]);
    let d = Step::new(base()).run(&e);
    assert!(!d.allowed);
    assert_eq!(d.policies, [DEFAULT_DENY]);
    assert!(d.errors.is_empty());
}

#[test]
fn forbid_overrides_permit() {
    let e = engine(&[
        ("allow", PERMIT_ALL),
        (
            "no-shell",
            r#"forbid(principal, action, resource == Hsync::Operator::"shell");"#,
        ),
    ]);
    let mut step = Step::new(base());
    step.operator = "shell";
    let d = step.run(&e);
    assert!(!d.allowed, "forbid must win over permit");
    assert_eq!(d.policies, ["no-shell"]);

    step.operator = "embed";
    let d = step.run(&e);
    assert!(d.allowed);
    assert_eq!(d.policies, ["allow"]);
}

#[test]
fn policies_lists_every_determining_policy_sorted() {
    let e = engine(&[
        ("z-any", PERMIT_ALL),
        (
            "a-alice",
            r#"permit(principal == Hsync::User::"alice", action, resource);"#,
        ),
        (
            "m-bob",
            r#"permit(principal == Hsync::User::"bob", action, resource);"#,
        ),
    ]);
    let d = Step::new(base()).run(&e);
    assert!(d.allowed);
    assert_eq!(
        d.policies,
        ["a-alice", "z-any"],
        "non-matching m-bob must not be listed"
    );
}

#[test]
fn when_condition_on_context_number() {
    let e = engine(&[(
        "small",
        "permit(principal, action, resource) when { context.dimension < 64 };",
    )]);
    assert!(Step::new(with(json!({"dimension": 32}))).run(&e).allowed);
    let d = Step::new(with(json!({"dimension": 64}))).run(&e);
    assert!(!d.allowed);
    assert!(
        d.errors.is_empty(),
        "a false condition is not an error: {:?}",
        d.errors
    );
}

#[test]
fn unless_condition_on_context_string() {
    let e = engine(&[(
        "not-blocked",
        r#"permit(principal, action, resource) unless { context.job_id == "blocked" };"#,
    )]);
    assert!(Step::new(base()).run(&e).allowed);
    let d = Step::new(json!({"job_id": "blocked", "node_id": "n"})).run(&e);
    assert!(!d.allowed);
    assert_eq!(d.policies, [DEFAULT_DENY]);
}

#[test]
fn stage_maps_to_action() {
    let e = engine(&[(
        "post-only",
        r#"permit(principal, action == Hsync::Action::"post", resource);"#,
    )]);
    let mut step = Step::new(base());
    assert!(!step.run(&e).allowed);
    step.stage = Stage::Post;
    assert!(step.run(&e).allowed);
}

#[test]
fn principal_restriction() {
    let e = engine(&[(
        "alice",
        r#"permit(principal == Hsync::User::"alice", action, resource);"#,
    )]);
    let mut step = Step::new(base());
    assert!(step.run(&e).allowed);
    step.principal = "bob";
    assert!(!step.run(&e).allowed);
    // Ids are data, not syntax: quotes cannot forge another user.
    step.principal = r#"alice", action, resource);"#;
    assert!(!step.run(&e).allowed);
}

#[test]
fn capabilities_are_parents_and_attribute() {
    let e = engine(&[(
        "embedding",
        r#"permit(principal, action, resource in Hsync::Capability::"embedding");"#,
    )]);
    let mut step = Step::new(base());
    step.capabilities = vec!["gpu".into(), "embedding".into()];
    let d = step.run(&e);
    assert!(d.allowed);
    assert_eq!(d.policies, ["embedding"]);
    step.capabilities = vec!["gpu".into()];
    assert!(!step.run(&e).allowed);
    step.capabilities = vec![];
    assert!(!step.run(&e).allowed);

    let e = engine(&[(
        "gpu-attr",
        r#"permit(principal, action, resource) when { resource.capabilities.contains("gpu") };"#,
    )]);
    step.capabilities = vec!["gpu".into(), "gpu".into()];
    assert!(step.run(&e).allowed);
    step.capabilities = vec!["cpu".into()];
    assert!(!step.run(&e).allowed);
}

// ---------------------------------------------------------------- decimals

const CURVY: &str = r#"permit(principal, action, resource) when { context.curvature.greaterThan(decimal("0.5")) };"#;

#[test]
fn floats_become_decimals() {
    let e = engine(&[("curvy", CURVY)]);
    assert!(Step::new(with(json!({"curvature": 0.75}))).run(&e).allowed);
    let d = Step::new(with(json!({"curvature": 0.25}))).run(&e);
    assert!(!d.allowed);
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    // Negative values and whole-valued floats are decimals too.
    assert!(!Step::new(with(json!({"curvature": -3.5}))).run(&e).allowed);
    assert!(Step::new(with(json!({"curvature": 2.0}))).run(&e).allowed);
}

#[test]
fn decimals_round_down_to_four_digits() {
    let e = engine(&[(
        "exact",
        r#"permit(principal, action, resource) when { context.x == decimal("0.1234") && context.y == decimal("-0.0001") };"#,
    )]);
    assert!(
        Step::new(with(json!({"x": 0.12349, "y": -0.00005})))
            .run(&e)
            .allowed
    );
    assert!(
        !Step::new(with(json!({"x": 0.12339, "y": -0.00005})))
            .run(&e)
            .allowed
    );
    // Strict comparisons against a 4-digit bound stay exact: just below 1 is below 1.
    let e = engine(&[("inside", r#"permit(principal, action, resource) when { context.x.lessThan(decimal("1.0")) };"#)]);
    assert!(Step::new(with(json!({"x": 0.999_999_9}))).run(&e).allowed);
    assert!(!Step::new(with(json!({"x": 1.0}))).run(&e).allowed);
}

#[test]
fn integer_without_schema_stays_long() {
    // Without a schema `1` is a Long, so calling a decimal method on it is a
    // type error, which must deny (fail closed) and name the policy.
    let e = engine(&[("curvy", CURVY)]);
    let d = Step::new(with(json!({"curvature": 1}))).run(&e);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["curvy"]);
    assert!(d.errors[0].starts_with("curvy: "), "{:?}", d.errors);
}

#[test]
fn unrepresentable_numbers_deny_with_a_clear_error() {
    let e = engine(&[("allow", PERMIT_ALL)]);
    for (value, needle) in [
        (json!({"params": {"huge": 1e300}}), "context.params.huge"),
        (json!({"big": 1e15}), "context.big"),
        (json!({"list": [1, u64::MAX]}), "context.list.[1]"),
    ] {
        let d = Step::new(with(value.clone())).run(&e);
        assert!(!d.allowed, "{value} must be denied");
        assert_eq!(d.policies, [DEFAULT_DENY]);
        assert_eq!(d.errors.len(), 1);
        assert!(d.errors[0].starts_with("request: "), "{:?}", d.errors);
        assert!(
            d.errors[0].contains(needle),
            "{:?} should name {needle}",
            d.errors
        );
    }
}

#[test]
fn f64_to_decimal_formats_and_bounds() {
    assert_eq!(f64_to_decimal(0.75).unwrap(), "0.7500");
    assert_eq!(f64_to_decimal(-1.5).unwrap(), "-1.5000");
    assert_eq!(f64_to_decimal(-0.00001).unwrap(), "-0.0001");
    assert_eq!(f64_to_decimal(0.99999).unwrap(), "0.9999");
    assert_eq!(f64_to_decimal(3.0).unwrap(), "3.0000");
    assert_eq!(f64_to_decimal(123.45678).unwrap(), "123.4567");
    // Near the bound f64 has fewer than 4 fractional digits of precision.
    assert!(f64_to_decimal(-922337203685477.5)
        .unwrap()
        .starts_with("-922337203685477."));
    assert!(f64_to_decimal(f64::NAN).is_err());
    assert!(f64_to_decimal(f64::INFINITY).is_err());
    assert!(f64_to_decimal(f64::NEG_INFINITY).is_err());
    assert!(f64_to_decimal(922337203685477.6).is_err());
    assert!(f64_to_decimal(-922337203685478.0).is_err());
}

#[test]
fn other_json_kinds_map_naturally() {
    let e = engine(&[(
        "shapes",
        r#"permit(principal, action, resource) when {
            context.flag &&
            context.sizes.contains(3) &&
            context.weights.contains(decimal("0.5000")) &&
            context.summary.rows == 10 &&
            context.summary.kind == "matrix" &&
            !(context has gone)
        };"#,
    )]);
    let good = with(json!({
        "flag": true,
        "sizes": [1, 3, 3],
        "weights": [0.5, 0.25],
        "summary": {"rows": 10, "kind": "matrix"},
        "gone": null,
    }));
    assert!(Step::new(good).run(&e).allowed);
    let bad = with(json!({
        "flag": false, "sizes": [3], "weights": [0.5], "summary": {"rows": 10, "kind": "matrix"}
    }));
    assert!(!Step::new(bad).run(&e).allowed);
}

#[test]
fn escape_keys_in_context_are_plain_data() {
    // In Cedar's JSON format `{"__entity": ..}` would be an entity reference;
    // the context is built through the Rust API, so it stays a record.
    let e = engine(&[(
        "not-entity",
        r#"permit(principal, action, resource) when { context.x has __entity };"#,
    )]);
    let d = Step::new(with(
        json!({"x": {"__entity": {"type": "Hsync::User", "id": "root"}}}),
    ))
    .run(&e);
    assert!(d.allowed, "{d:?}");
}

// ---------------------------------------------------------------- fail closed

#[test]
fn evaluation_error_denies_and_names_the_policy() {
    let e = engine(&[
        ("allow", PERMIT_ALL),
        (
            "needs-dim",
            "permit(principal, action, resource) when { context.dimension < 64 };",
        ),
    ]);
    let d = Step::new(base()).run(&e);
    assert!(!d.allowed, "an error must deny even though `allow` matched");
    assert_eq!(d.policies, ["needs-dim"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].starts_with("needs-dim: "), "{:?}", d.errors);
    assert!(d.errors[0].contains("dimension"), "{:?}", d.errors);
}

#[test]
fn evaluation_error_and_forbid_are_both_listed_without_fail_fast() {
    let no_fail_fast = EngineOptions {
        fail_fast: false,
        ..EngineOptions::default()
    };
    let e = PolicyEngine::new_with([
        (
            "no-embed",
            r#"forbid(principal, action, resource == Hsync::Operator::"embed");"#,
        ),
        (
            "broken",
            "forbid(principal, action, resource) when { context.nope };",
        ),
    ]
    .map(|(i, t)| (i.to_string(), t.to_string())), None, no_fail_fast)
    .unwrap();
    let d = Step::new(base()).run(&e);
    assert!(!d.allowed);
    assert_eq!(d.policies, ["broken", "no-embed"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].starts_with("broken: "));
}

#[test]
fn permit_all_engine_allows_everything() {
    let e = PolicyEngine::permit_all();
    let d = Step::new(json!({"anything": [1e300]})).run(&e);
    assert!(d.allowed);
    assert_eq!(d.policies, [DEFAULT_NO_POLICIES]);
    assert!(e.policy_ids().is_empty());
}

#[test]
fn empty_policy_list_denies() {
    let e = PolicyEngine::new(Vec::<(String, String)>::new(), None).unwrap();
    let d = Step::new(base()).run(&e);
    assert!(!d.allowed);
    assert_eq!(d.policies, [DEFAULT_DENY]);
}

#[test]
fn policy_ids_keep_order_and_ids() {
    let e = engine(&[
        ("b", PERMIT_ALL),
        ("a", "forbid(principal, action, resource);"),
    ]);
    assert_eq!(e.policy_ids(), ["b", "a"]);
    assert_eq!(Step::new(base()).run(&e).policies, ["a"]);
}

// ---------------------------------------------------------------- rejected policies

#[test]
fn invalid_policy_text_names_the_id_and_location() {
    let err = PolicyEngine::new(
        [(
            "broken-1".to_string(),
            "permit(principal, action resource);".to_string(),
        )],
        None,
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Parse { .. }), "{err:?}");
    assert_eq!(err.policy_id(), Some("broken-1"));
    let text = err.to_string();
    assert!(text.contains("`broken-1`"), "{text}");
    assert!(text.contains("(at 1:"), "location missing: {text}");
    assert!(validate_policy("x", "permit(", None).is_err());
    assert!(validate_policy("x", PERMIT_ALL, None).is_ok());
}

#[test]
fn several_policies_or_template_rejected() {
    let two = format!("{PERMIT_ALL}\n{PERMIT_ALL}");
    let err = validate_policy("twice", &two, None).unwrap_err();
    assert!(
        matches!(err, PolicyError::NotSinglePolicy { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("`twice`") && err.to_string().contains("2 policies"),
        "{err}"
    );

    let err = validate_policy(
        "tmpl",
        "permit(principal == ?principal, action, resource);",
        None,
    )
    .unwrap_err();
    assert!(
        matches!(err, PolicyError::NotSinglePolicy { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("template"), "{err}");

    let err = validate_policy("empty", "  // nothing\n", None).unwrap_err();
    assert!(err.to_string().contains("`empty`"), "{err}");
}

#[test]
fn duplicate_ids_rejected() {
    let err = PolicyEngine::new(
        [
            ("same".to_string(), PERMIT_ALL.to_string()),
            ("same".to_string(), PERMIT_ALL.to_string()),
        ],
        None,
    )
    .unwrap_err();
    assert_eq!(err, PolicyError::DuplicateId { id: "same".into() });
}

#[test]
fn strict_validation_rejects_unknown_attribute_and_type() {
    let err = validate_policy(
        "typo",
        "permit(principal, action, resource) when { context.dimensoin < 64 };",
        Some(DEFAULT_SCHEMA),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Validation { .. }), "{err:?}");
    assert_eq!(err.policy_id(), Some("typo"));
    assert!(err.to_string().contains("dimensoin"), "{err}");

    let err = validate_policy(
        "group",
        r#"permit(principal in Hsync::Group::"admins", action, resource);"#,
        Some(DEFAULT_SCHEMA),
    )
    .unwrap_err();
    assert!(matches!(err, PolicyError::Validation { .. }), "{err:?}");
    assert!(err.to_string().contains("Group"), "{err}");

    // Optional attributes need `has` under strict validation.
    assert!(validate_policy(
        "unguarded",
        "permit(principal, action, resource) when { context.dimension < 64 };",
        Some(DEFAULT_SCHEMA)
    )
    .is_err());
    validate_policy(
        "guarded",
        "permit(principal, action, resource) when { context has dimension && context.dimension < 64 };",
        Some(DEFAULT_SCHEMA),
    )
    .unwrap();

    // The same failure through `new` names the offending policy, not the first one.
    let err = PolicyEngine::new(
        [
            ("fine".to_string(), PERMIT_ALL.to_string()),
            (
                "bad".to_string(),
                "permit(principal, action, resource) when { context.nope };".to_string(),
            ),
        ],
        Some(DEFAULT_SCHEMA),
    )
    .unwrap_err();
    assert_eq!(err.policy_id(), Some("bad"), "{err}");
}

#[test]
fn bad_schemas_rejected() {
    let err = validate_policy("p", PERMIT_ALL, Some("namespace Hsync { entity ")).unwrap_err();
    assert!(matches!(err, PolicyError::Schema { .. }), "{err:?}");
    let err = PolicyEngine::new(
        [("p".to_string(), PERMIT_ALL.to_string())],
        Some("namespace Hsync { entity User; entity Capability; entity Operator in [Capability]; action pre appliesTo { principal: User, resource: Operator }; }"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains(r#"Hsync::Action::"post""#),
        "{err}"
    );
}

// ---------------------------------------------------------------- with the default schema

#[test]
fn default_schema_engine_types_and_filters_context() {
    let e = schema_engine(&[(
        "curvy",
        r#"permit(principal, action, resource in Hsync::Capability::"embedding")
           when { context has curvature && context.curvature.greaterThan(decimal("0.5")) };"#,
    )]);
    assert!(Step::new(with(json!({"curvature": 0.75}))).run(&e).allowed);
    assert!(!Step::new(with(json!({"curvature": 0.25}))).run(&e).allowed);
    // Declared decimal: a whole number is accepted as a decimal.
    let d = Step::new(with(json!({"curvature": 1}))).run(&e);
    assert!(d.allowed, "{d:?}");
    // Undeclared parameters are dropped instead of failing the request.
    let d = Step::new(with(
        json!({"curvature": 0.75, "batch": 8, "out": {"rows": 2}}),
    ))
    .run(&e);
    assert!(d.allowed, "{d:?}");
    // Wrong type for a declared attribute fails closed.
    let d = Step::new(with(json!({"curvature": "steep"}))).run(&e);
    assert!(!d.allowed);
    assert!(
        d.errors[0].starts_with("request: context.curvature: "),
        "{:?}",
        d.errors
    );
    let d = Step::new(with(json!({"curvature": 0.75, "dimension": 1.5}))).run(&e);
    assert!(!d.allowed);
    assert!(d.errors[0].contains("context.dimension"), "{:?}", d.errors);
    // A required attribute missing fails closed.
    let d = Step::new(json!({"node_id": "n1", "curvature": 0.75})).run(&e);
    assert!(!d.allowed);
    assert!(d.errors[0].contains("job_id"), "{:?}", d.errors);
}

#[test]
fn context_shape_reads_default_schema() {
    let shape = context_shape(DEFAULT_SCHEMA, Stage::Post).expect("shape is readable");
    let attr = |ty, required| Some(AttrShape { ty, required });
    assert_eq!(
        shape.attrs.get("curvature").copied(),
        attr(DeclaredType::Decimal, false)
    );
    assert_eq!(
        shape.attrs.get("dimension").copied(),
        attr(DeclaredType::Long, false)
    );
    assert_eq!(
        shape.attrs.get("job_id").copied(),
        attr(DeclaredType::String, true)
    );
    assert!(!shape.attrs.contains_key("no_such_attribute"));

    // Inline record context, decimal written directly.
    let inline = r#"namespace Hsync {
        entity User; entity Capability; entity Operator in [Capability] { capabilities: Set<String> };
        action pre, post appliesTo { principal: User, resource: Operator, context: { score: decimal, n?: Long } };
    }"#;
    let shape = context_shape(inline, Stage::Pre).unwrap();
    assert_eq!(
        shape.attrs.get("score").copied(),
        attr(DeclaredType::Decimal, true)
    );
    assert_eq!(
        shape.attrs.get("n").copied(),
        attr(DeclaredType::Long, false)
    );
}

// ---------------------------------------------------------------- hostile input

#[test]
fn huge_garbage_policy_is_an_error() {
    let garbage: String = (0..1_048_576u32)
        .map(|i| {
            char::from(b"(){}[]\"a!&| \n=;"[(i.wrapping_mul(2_654_435_761) >> 28) as usize % 15])
        })
        .collect();
    let err = validate_policy("huge", &garbage, None).unwrap_err();
    assert!(matches!(err, PolicyError::TooComplex { .. }), "{err:?}");
    assert!(err.to_string().contains("`huge`"));

    // Garbage under the size limit reaches the parser and is rejected by it.
    let small: String = garbage
        .chars()
        .filter(|c| !"(){}[]".contains(*c))
        .take(MAX_POLICY_BYTES - 100)
        .collect();
    let err = validate_policy("garbage", &small, None).unwrap_err();
    assert!(
        matches!(
            err,
            PolicyError::Parse { .. } | PolicyError::NotSinglePolicy { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn deep_nesting_in_policy_is_an_error() {
    let deep = format!(
        "permit(principal, action, resource) when {{ {}true{} }};",
        "(".repeat(5_000),
        ")".repeat(5_000)
    );
    let err = validate_policy("deep", &deep, None).unwrap_err();
    assert!(matches!(err, PolicyError::TooComplex { .. }), "{err:?}");
    // Brackets inside strings and comments do not count.
    let quoted = format!(
        "// {}\npermit(principal, action, resource) when {{ context.job_id != \"{}\" }};",
        "(".repeat(100),
        "[".repeat(100)
    );
    validate_policy("quoted", &quoted, None).unwrap();
}

#[test]
fn long_operator_chains_do_not_crash() {
    // Chains build deep ASTs without brackets; they must be handled within
    // the size limit on an ordinary (2 MiB) test thread.
    for (id, unit) in [("ands", "true && "), ("attrs", ".a"), ("adds", "1 + ")] {
        let body = unit.repeat((MAX_POLICY_BYTES - 100) / unit.len());
        let text = match id {
            "attrs" => format!("permit(principal, action, resource) when {{ context{body} }};"),
            "adds" => format!("permit(principal, action, resource) when {{ {body}1 > 0 }};"),
            _ => format!("permit(principal, action, resource) when {{ {body}true }};"),
        };
        match PolicyEngine::new([(id.to_string(), text)], None) {
            Ok(e) => {
                let d = Step::new(with(json!({"a": {"a": 1}}))).run(&e);
                // Whatever Cedar decides, an error must not allow.
                assert!(d.errors.is_empty() || !d.allowed, "{id}: {d:?}");
            }
            Err(err) => assert_eq!(err.policy_id(), Some(id)),
        }
    }
}

fn nested(depth: usize) -> Value {
    // Built by hand: `json!({"x": v})` would re-serialize `v` each time (quadratic).
    let mut v = json!(1);
    for _ in 0..depth {
        let mut map = Map::new();
        map.insert("x".to_string(), v);
        v = Value::Object(map);
    }
    v
}

#[test]
fn deeply_nested_context_denies() {
    let e = engine(&[("allow", PERMIT_ALL)]);
    // Within the limit: fine.
    let d = Step::new(with(json!({"n": nested(MAX_CONTEXT_DEPTH - 2)}))).run(&e);
    assert!(d.allowed, "{d:?}");
    // Just over the limit: denied with a clear error.
    let d = Step::new(with(json!({"n": nested(MAX_CONTEXT_DEPTH)}))).run(&e);
    assert!(!d.allowed);
    assert!(d.errors[0].contains("nested more than"), "{:?}", d.errors);

    // Very deep: still a clean deny. (A big stack only because dropping a
    // deep serde_json value is itself recursive.)
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let deep = with(json!({"n": nested(200_000)}));
            let d = Step::new(deep).run(&e);
            assert!(!d.allowed);
            assert!(
                d.errors[0].starts_with("request: context.n.x.x"),
                "{:?}",
                d.errors
            );
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn long_cedar_messages_are_bounded() {
    // Cedar quotes the whole context when it does not match the schema.
    let schema = r#"namespace Hsync {
        entity User; entity Capability; entity Operator in [Capability] { capabilities: Set<String> };
        action pre, post appliesTo { principal: User, resource: Operator, context: { job_id: String, sizes: Set<Long> } };
    }"#;
    let e = PolicyEngine::new([("allow".to_string(), PERMIT_ALL.to_string())], Some(schema)).unwrap();
    let big = "x".repeat(100_000);
    let d = Step::new(json!({"job_id": big, "sizes": ["not a number"]})).run(&e);
    assert!(!d.allowed);
    assert!(d.errors[0].len() < 2 * MAX_ERROR_BYTES, "{} bytes", d.errors[0].len());
}

#[test]
fn oversized_context_denies() {
    let e = engine(&[("allow", PERMIT_ALL)]);
    let d = Step::new(with(json!({"v": vec![0; MAX_CONTEXT_VALUES]}))).run(&e);
    assert!(!d.allowed);
    assert!(
        d.errors[0].contains("values in the context"),
        "{:?}",
        d.errors
    );
}

#[test]
fn odd_ids_are_data() {
    let e = engine(&[(
        "odd",
        r#"permit(principal == Hsync::User::"", action, resource == Hsync::Operator::"a\"b::c") when { resource in Hsync::Capability::"ü\n" };"#,
    )]);
    let mut step = Step::new(base());
    step.principal = "";
    step.operator = "a\"b::c";
    step.capabilities = vec!["ü\n".into()];
    assert!(step.run(&e).allowed);
}

#[test]
fn engine_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PolicyEngine>();
}

// ---------------------------------------------------------------- properties

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|u| json!(u)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Every in-range float converts to a literal Cedar accepts, at most one unit of
    /// the 4th digit below it.
    #[test]
    fn decimal_conversion_is_accepted_and_close(x in any::<f64>()) {
        match f64_to_decimal(x) {
            Ok(s) => {
                prop_assert!(x.is_finite() && x.abs() < 9.3e14);
                let parsed: f64 = s.parse().unwrap();
                prop_assert!(parsed <= x + x.abs() * 1e-15 && x - parsed <= 0.0001 + x.abs() * 1e-15, "{x} -> {s}");
                let ctx = cedar_policy::Context::from_pairs([("v".to_string(), RestrictedExpression::new_decimal(&s))]);
                prop_assert!(ctx.is_ok(), "Cedar rejected {s}");
            }
            Err(_) => prop_assert!(!x.is_finite() || x.abs() > 9.2e14),
        }
    }

    /// Arbitrary contexts never panic, and a context error never allows.
    #[test]
    fn arbitrary_context_never_panics(
        map in prop::collection::btree_map(".{0,6}", json_value(), 0..6),
        caps in prop::collection::vec(".{0,4}", 0..4),
        principal in ".{0,6}",
    ) {
        let context: Map<String, Value> = map.into_iter().collect();
        let engines = [engine(&[("allow", PERMIT_ALL)]), schema_engine(&[("allow", PERMIT_ALL)])];
        for e in &engines {
            let d = e.evaluate(&EvalInput {
                principal: &principal,
                stage: Stage::Post,
                operator: "op",
                capabilities: &caps,
                context: &context,
            });
            prop_assert_eq!(d.allowed, d.errors.is_empty());
        }
    }

    /// Arbitrary policy text never panics; a rejection always names the id.
    #[test]
    fn arbitrary_policy_text_never_panics(text in "(permit|forbid|\\(|\\)|principal|action|resource|when|\\{|\\}|context|\\.|x|==|<|\"|;|,| |1|has|in|Hsync::User::)*") {
        if let Err(err) = validate_policy("fuzz", &text, Some(DEFAULT_SCHEMA)) {
            prop_assert_eq!(err.policy_id(), Some("fuzz"));
        }
    }
}

// ---------------------------------------------------------------- fail-fast, lazy, cache, parallel

impl Step<'_> {
    fn run_cached(&self, engine: &PolicyEngine, cache: &DecisionCache) -> Decision {
        engine.evaluate_cached(
            &EvalInput {
                principal: self.principal,
                stage: self.stage,
                operator: self.operator,
                capabilities: &self.capabilities,
                context: &self.context,
            },
            Some(cache),
        )
    }
}

fn pairs(policies: &[(&str, &str)]) -> Vec<(String, String)> {
    policies
        .iter()
        .map(|(i, t)| (i.to_string(), t.to_string()))
        .collect()
}

#[test]
fn fail_fast_stops_at_the_first_deny() {
    let policies = [
        ("a-no-embed", r#"forbid(principal, action, resource == Hsync::Operator::"embed");"#),
        ("b-no-alice", r#"forbid(principal == Hsync::User::"alice", action, resource);"#),
        ("c-allow", PERMIT_ALL),
    ];
    let fast = PolicyEngine::new(pairs(&policies), None).unwrap();
    let d = Step::new(base()).run(&fast);
    assert!(!d.allowed);
    assert_eq!(d.policies.len(), 1, "fail-fast names the forbid that stopped it: {d:?}");
    let slow = PolicyEngine::new_with(
        pairs(&policies),
        None,
        EngineOptions { fail_fast: false, ..EngineOptions::default() },
    )
    .unwrap();
    assert_eq!(Step::new(base()).run(&slow).policies, ["a-no-embed", "b-no-alice"]);
}

#[test]
fn parallel_and_sequential_decide_alike() {
    // 300 policies: permits for odd users, forbids for users divisible by 7.
    let mut policies = Vec::new();
    for i in 0..300 {
        let effect = if i % 2 == 0 { "forbid" } else { "permit" };
        policies.push((
            format!("p{i:03}"),
            format!(r#"{effect}(principal == Hsync::User::"u{i}", action, resource);"#),
        ));
    }
    let options = |parallel_min| EngineOptions { parallel_min, fail_fast: false, ..EngineOptions::default() };
    let par = PolicyEngine::new_with(policies.clone(), None, options(2)).unwrap();
    let seq = PolicyEngine::new_with(policies, None, options(100_000)).unwrap();
    for user in ["u0", "u1", "u2", "u299", "nobody"] {
        let mut step = Step::new(base());
        step.principal = user;
        assert_eq!(step.run(&par), step.run(&seq), "user {user}");
    }
    let mut step = Step::new(base());
    step.principal = "u299";
    assert_eq!(step.run(&par).policies, ["p299"]);
}

#[test]
fn lazy_engine_parses_on_first_use_and_a_bad_policy_denies_naming_itself() {
    let e = PolicyEngine::lazy(
        pairs(&[("allow", PERMIT_ALL), ("broken", "permit(principal, action, resource")]),
        None,
        EngineOptions::default(),
    )
    .expect("a lazy engine does not parse policies");
    assert_eq!(e.parsed_count(), 0);
    let d = Step::new(base()).run(&e);
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policies, ["broken"]);
    assert!(d.errors[0].starts_with("broken: "), "{:?}", d.errors);
    assert_eq!(e.parsed_count(), 2);
    let errors = e.parse_all();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].policy_id(), Some("broken"));
    // Removing it restores service; the parsed `allow` is shared, not re-parsed.
    let fixed = e.without_policy("broken");
    assert_eq!(fixed.parsed_count(), 1);
    assert!(Step::new(base()).run(&fixed).allowed);
}

#[test]
fn with_policy_validates_now_and_changes_the_key() {
    let e = PolicyEngine::lazy(pairs(&[("allow", PERMIT_ALL)]), Some(DEFAULT_SCHEMA), EngineOptions::default()).unwrap();
    let before = e.policy_key("allow").unwrap();
    let err = e
        .with_policy("bad", "permit(principal, action, resource) when { context.nope == 1 };")
        .unwrap_err();
    assert_eq!(err.policy_id(), Some("bad"));
    let e2 = e.with_policy("allow", "permit(principal, action, resource) when { true };").unwrap();
    assert_ne!(e2.policy_key("allow").unwrap(), before, "a new text is a new cache key");
    assert_eq!(e2.policy_ids(), ["allow"]);
}

#[test]
fn permit_when_empty_only_when_asked() {
    let opts = EngineOptions { permit_when_empty: true, ..EngineOptions::default() };
    let e = PolicyEngine::lazy(Vec::new(), Some(DEFAULT_SCHEMA), opts).unwrap();
    let d = Step::new(base()).run(&e);
    assert!(d.allowed);
    assert_eq!(d.policies, [DEFAULT_NO_POLICIES]);
}

#[test]
fn cache_keys_on_what_the_policy_reads() {
    let e = schema_engine(&[(
        "curvy",
        r#"permit(principal, action, resource)
           when { context has curvature && context.curvature.greaterThan(decimal("0.5")) };"#,
    )]);
    let cache = DecisionCache::new(1000, std::time::Duration::from_secs(60));
    let first = Step::new(json!({"job_id": "j1", "node_id": "n1", "curvature": 0.75})).run_cached(&e, &cache);
    assert!(first.allowed && !first.cached, "{first:?}");
    // Another job and node, same curvature: the policy does not read ids, so it hits.
    let again = Step::new(json!({"job_id": "j2", "node_id": "n9", "curvature": 0.75})).run_cached(&e, &cache);
    assert!(again.allowed && again.cached, "{again:?}");
    assert_eq!(again.policies, ["curvy"]);
    // A different curvature is a different state.
    let other = Step::new(json!({"job_id": "j2", "node_id": "n9", "curvature": 0.25})).run_cached(&e, &cache);
    assert!(!other.allowed && !other.cached, "{other:?}");
    // Absence is state too.
    let absent = Step::new(base()).run_cached(&e, &cache);
    assert!(!absent.allowed && !absent.cached);
    // Another principal, operator or stage is another state.
    let mut step = Step::new(json!({"job_id": "j1", "node_id": "n1", "curvature": 0.75}));
    step.principal = "bob";
    assert!(!step.run_cached(&e, &cache).cached);
    step.stage = Stage::Post;
    assert!(!step.run_cached(&e, &cache).cached);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses), (1, 5), "{s:?}");
    // A bad request is still denied when the cache could answer for the policies.
    let bad = Step::new(json!({"job_id": "j3", "node_id": "n1", "curvature": "steep"})).run_cached(&e, &cache);
    assert!(!bad.allowed && bad.errors[0].starts_with("request: "), "{bad:?}");
}

#[test]
fn cached_errors_still_deny_and_a_whole_context_reader_sees_every_attribute() {
    let e = engine(&[
        ("allow", PERMIT_ALL),
        ("needs-dim", "permit(principal, action, resource) when { context.dimension < 64 };"),
    ]);
    let cache = DecisionCache::new(1000, std::time::Duration::from_secs(60));
    for _ in 0..2 {
        let d = Step::new(base()).run_cached(&e, &cache);
        assert!(!d.allowed);
        assert_eq!(d.policies, ["needs-dim"]);
    }
    let whole = engine(&[("exact", r#"permit(principal, action, resource) when { context == {"job_id": "j1", "node_id": "n1"} };"#)]);
    let cache = DecisionCache::new(1000, std::time::Duration::from_secs(60));
    assert!(Step::new(base()).run_cached(&whole, &cache).allowed);
    let d = Step::new(json!({"job_id": "j2", "node_id": "n1"})).run_cached(&whole, &cache);
    assert!(!d.allowed && !d.cached, "a policy reading the whole context must not hit: {d:?}");
}
