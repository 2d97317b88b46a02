//! Hostile jobs through the runner's validation, exactly as `hsync.jobs.run` (and the
//! durable `jobs.submit`) and `hsync.jobs.extend` call it before any node runs:
//! [`check_job_id`], then [`plan_job`] (operators, then [`hsync_runner::dag::plan`]), and
//! [`plan_extension`] on a session.
//!
//! Random jobs with node counts past [`MAX_NODES`], references to missing nodes, to the
//! node itself and around cycles, duplicate ids, hostile ids and names (empty, past
//! [`MAX_ID_LEN`], hundreds of KB, unicode, control characters, NATS wildcards), unknown
//! operators and versions, literals of every kind (NaN, nested, large arrays) must give
//! either a plan in which every dependency comes first, or the error an independent
//! reading of the rules predicts (code, node and argument), whose message names the
//! problem and is short enough for a reply.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use hsync_operators::{catalogue, kind_mismatch};
use hsync_protocol::error::{shorten, MAX_MESSAGE, MAX_NAME};
use hsync_protocol::job::{valid_id, Job, Node};
use hsync_protocol::operator::{split_operator_ref, OperatorDef};
use hsync_protocol::{Arg, Codec, ErrorCode, ErrorReply, Reference, Tensor, Value};
use hsync_runner::dag::{Plan, MAX_ID_LEN, MAX_NODES};
use hsync_runner::engine::{check_job_id, plan_extension, plan_job};
use hsync_runner::session::Session;
use hsync_runner::Registry;
use proptest::prelude::*;
use proptest::sample::Index;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    // No registry bucket: the built-ins, as a runner without NATS KV sees them.
    REGISTRY.get_or_init(|| Registry::new(None, Codec::default()))
}

/// What `jobs.run` does with a job before running anything.
fn validate(job: &mut Job) -> Result<(Vec<Arc<OperatorDef>>, Plan), ErrorReply> {
    check_job_id(job)?;
    futures::executor::block_on(plan_job(registry(), job))
}

fn builtin(op: &str) -> Option<&'static OperatorDef> {
    let (id, version) = split_operator_ref(op);
    let def = &hsync_operators::find(id)?.def;
    match version {
        Some(v) if v != def.version => None,
        _ => Some(def),
    }
}

// ---------------------------------------------------------------------------------------
// Generators.

/// A node id, job id or reference target: mostly from a small pool (so that duplicates
/// and references meet), sometimes hostile.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        400 => (0u8..16).prop_map(|k| format!("n{k}")),
        1 => Just(String::new()),
        1 => Just("x".repeat(MAX_ID_LEN)),
        1 => Just("y".repeat(MAX_ID_LEN + 1)),
        1 => "[a-zA-Z0-9_-]{1,12}",
        1 => "\\PC{1,8}",
        1 => "[\\x00-\\x1f\\x7f]{1,4}",
        1 => proptest::sample::select(vec!["a.b", "*", ">", "a b", "n0\n", "n0 ", "é", "n\u{0}0", "ref", "lit", "@"])
            .prop_map(String::from),
        1 => (1usize..=3).prop_map(|k| "z".repeat(k * 100_000)),
    ]
}

/// Where a reference points: at one of the job's nodes (by position), or by name.
#[derive(Clone, Debug)]
enum Target {
    Node(Index),
    Name(String),
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![15 => any::<Index>().prop_map(Target::Node), 1 => name().prop_map(Target::Name)]
}

#[derive(Clone, Debug)]
enum OpGen {
    Builtin(Index),
    Versioned(Index, bool),
    Other(String),
}

fn op() -> impl Strategy<Value = OpGen> {
    prop_oneof![
        100 => any::<Index>().prop_map(OpGen::Builtin),
        2 => (any::<Index>(), proptest::bool::weighted(0.7)).prop_map(|(i, ok)| OpGen::Versioned(i, ok)),
        1 => prop_oneof![
            Just(String::new()),
            Just("nope".to_string()),
            Just("const@".to_string()),
            Just("@1".to_string()),
            "\\PC{0,12}",
            Just("o".repeat(300_000)),
        ]
        .prop_map(OpGen::Other),
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(1e300)
        ]
        .prop_map(Value::Float),
        "\\PC{0,8}".prop_map(Value::Str),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Value::Bytes),
        proptest::collection::vec(any::<f64>(), 0..6)
            .prop_map(|v| Value::Tensor(Tensor::vector(v))),
    ]
}

/// A literal: small trees of every kind, long arrays, and deep nesting.
fn literal() -> impl Strategy<Value = Value> {
    let tree = leaf().prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("ref|lit|path|shape|f64|[a-z]{1,3}", inner, 0..4)
                .prop_map(Value::Map),
        ]
    });
    prop_oneof![
        20 => tree,
        1 => (0usize..100_000).prop_map(|n| Value::Array(vec![Value::Float(0.5); n])),
        1 => (0usize..100_000).prop_map(|n| Value::Tensor(Tensor::vector(vec![1.0; n]))),
        1 => (2usize..200, 1usize..20).prop_map(|(r, c)| Value::Array(vec![Value::Array(vec![Value::Int(1); c]); r])),
        1 => (1usize..300).prop_map(nested),
    ]
}

/// `levels` nested one-element arrays around a number.
fn nested(levels: usize) -> Value {
    (0..levels).fold(Value::Float(1.0), |v, _| Value::Array(vec![v]))
}

#[derive(Clone, Debug)]
enum ArgGen {
    Ref(Target, Option<String>),
    Lit(Value),
    /// A literal of the kind the operator expects.
    Fitting,
}

fn arg() -> impl Strategy<Value = ArgGen> {
    prop_oneof![
        10 => (target(), proptest::option::of("[a-z0-9.]{0,6}")).prop_map(|(t, p)| ArgGen::Ref(t, p)),
        10 => Just(ArgGen::Fitting),
        1 => literal().prop_map(ArgGen::Lit),
    ]
}

/// An argument name: one the operator takes (by position), or any other.
#[derive(Clone, Debug)]
enum ArgName {
    Spec(Index),
    Other(String),
}

fn arg_name() -> impl Strategy<Value = ArgName> {
    prop_oneof![
        80 => any::<Index>().prop_map(ArgName::Spec),
        1 => prop_oneof![Just(String::new()), "\\PC{1,6}", Just("w".repeat(200_000))].prop_map(ArgName::Other),
    ]
}

/// A node's id: a fresh one (`n<position>`), an earlier node's again, or any name.
#[derive(Clone, Debug)]
enum IdGen {
    Fresh,
    Again(Index),
    Name(String),
}

fn id_gen() -> impl Strategy<Value = IdGen> {
    prop_oneof![60 => Just(IdGen::Fresh), 1 => any::<Index>().prop_map(IdGen::Again), 2 => name().prop_map(IdGen::Name)]
}

/// The ids of `gens` after `old` ids (a session's nodes; none for a whole job).
fn ids_of(gens: &[NodeGen], old: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = old.to_vec();
    for g in gens {
        let id = match &g.id {
            IdGen::Fresh => format!("n{}", ids.len()),
            IdGen::Again(i) => pick(&ids, i).unwrap_or_else(|| "n0".to_string()),
            IdGen::Name(s) => s.clone(),
        };
        ids.push(id);
    }
    ids.split_off(old.len())
}

#[derive(Clone, Debug)]
struct NodeGen {
    id: IdGen,
    op: OpGen,
    args: Vec<(ArgName, ArgGen)>,
    /// Also give every required argument the operator takes (most nodes).
    complete: bool,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        id_gen(),
        op(),
        proptest::collection::vec((arg_name(), arg()), 0..3),
        proptest::bool::weighted(0.98),
    )
        .prop_map(|(id, op, args, complete)| NodeGen {
            id,
            op,
            args,
            complete,
        })
}

#[derive(Clone, Debug)]
struct JobGen {
    job_id: String,
    nodes: Vec<NodeGen>,
    outputs: Vec<Target>,
    /// Extra `const` nodes appended, to cross [`MAX_NODES`].
    padding: usize,
}

fn job_gen() -> impl Strategy<Value = JobGen> {
    (
        prop_oneof![30 => Just("job-1".to_string()), 1 => Just(String::new()), 1 => name()],
        proptest::collection::vec(node_gen(), 0..16),
        proptest::collection::vec(target(), 0..3),
        prop_oneof![30 => Just(0usize), 1 => Just(MAX_NODES - 24), 1 => MAX_NODES..MAX_NODES + 50],
    )
        .prop_map(|(job_id, nodes, outputs, padding)| JobGen {
            job_id,
            nodes,
            outputs,
            padding,
        })
}

fn pick<T: Clone>(items: &[T], i: &Index) -> Option<T> {
    (!items.is_empty()).then(|| items[i.index(items.len())].clone())
}

fn resolve_target(t: &Target, ids: &[String]) -> String {
    match t {
        Target::Node(i) => pick(ids, i).unwrap_or_else(|| "ghost".to_string()),
        Target::Name(n) => n.clone(),
    }
}

/// Builds nodes with ids `own`; references by position point at `ids` (the nodes a
/// reference may name).
fn build_nodes(gens: &[NodeGen], own: &[String], ids: &[String]) -> Vec<Node> {
    let ops: Vec<&OperatorDef> = catalogue().iter().map(|b| &b.def).collect();
    gens.iter()
        .zip(own)
        .map(|(g, id)| {
            let (op, def) = match &g.op {
                OpGen::Builtin(i) => {
                    let d = ops[i.index(ops.len())];
                    (d.id.clone(), Some(d))
                }
                OpGen::Versioned(i, ok) => {
                    let d = ops[i.index(ops.len())];
                    let v = if *ok {
                        d.version.clone()
                    } else {
                        format!("{}9", d.version)
                    };
                    (format!("{}@{v}", d.id), Some(d))
                }
                OpGen::Other(s) => (s.clone(), None),
            };
            let mut args = BTreeMap::new();
            if g.complete {
                for spec in def.iter().flat_map(|d| &d.args) {
                    args.insert(spec.name.clone(), Arg::Lit(good_literal(spec.kind)));
                }
            }
            for (n, a) in &g.args {
                let name = match n {
                    ArgName::Spec(i) => match def.map(|d| &d.args).filter(|a| !a.is_empty()) {
                        Some(specs) => specs[i.index(specs.len())].name.clone(),
                        None => "value".to_string(),
                    },
                    ArgName::Other(s) => s.clone(),
                };
                let arg = match a {
                    ArgGen::Ref(t, path) => Arg::Ref(Reference {
                        node: resolve_target(t, ids),
                        path: path.clone(),
                    }),
                    ArgGen::Lit(v) => Arg::Lit(v.clone()),
                    ArgGen::Fitting => {
                        let kind = def
                            .and_then(|d| d.args.iter().find(|s| s.name == name))
                            .map(|s| s.kind);
                        Arg::Lit(good_literal(
                            kind.unwrap_or(hsync_protocol::operator::ArgKind::Any),
                        ))
                    }
                };
                args.insert(name, arg);
            }
            Node {
                id: id.clone(),
                op,
                args,
            }
        })
        .collect()
}

/// A literal that fits `kind`.
fn good_literal(kind: hsync_protocol::operator::ArgKind) -> Value {
    use hsync_protocol::operator::ArgKind::*;
    match kind {
        Any | Number => Value::Float(2.0),
        Integer => Value::Int(3),
        String => Value::Str("s".into()),
        Bytes => Value::Bytes(vec![1]),
        Vector | Numbers => Value::Tensor(Tensor::vector(vec![1.0, 2.0])),
        Matrix | Points => Value::Tensor(Tensor::matrix(2, 2, vec![1.0, 0.0, 0.0, 1.0]).unwrap()),
        Edges => Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1)])]),
    }
}

fn build_job(g: &JobGen) -> Job {
    let ids = ids_of(&g.nodes, &[]);
    let mut nodes = build_nodes(&g.nodes, &ids, &ids);
    nodes.extend((0..g.padding).map(|i| Node {
        id: format!("pad{i}"),
        op: "const".into(),
        args: BTreeMap::from([("value".to_string(), Arg::Lit(Value::Int(i as i64)))]),
    }));
    Job {
        job_id: g.job_id.clone(),
        submitter: "mallory".into(),
        nodes,
        outputs: g.outputs.iter().map(|t| resolve_target(t, &ids)).collect(),
        wait_receipts: false,
        timeout_ms: None,
        keep_session: false,
    }
}

// ---------------------------------------------------------------------------------------
// The rules, read independently: the first problem a job has, in the order the runner
// checks (job id; every node's operator; node count; ids; each node's arguments in name
// order, then its required arguments; cycles; requested outputs).

#[derive(Debug, PartialEq)]
struct Expected {
    code: ErrorCode,
    node: Option<String>,
    argument: Option<String>,
    /// Something the message must quote.
    quotes: Option<String>,
}

fn expect(
    code: ErrorCode,
    node: Option<&str>,
    argument: Option<&str>,
    quotes: Option<String>,
) -> Option<Expected> {
    Some(Expected {
        code,
        node: node.map(String::from),
        argument: argument.map(String::from),
        quotes,
    })
}

/// The first problem of `nodes`, added to `existing` nodes (none for a whole job), or
/// `None` when there is none.
fn first_problem(existing: &[Node], nodes: &[Node], outputs: &[String]) -> Option<Expected> {
    for n in nodes {
        if builtin(&n.op).is_none() {
            return expect(
                ErrorCode::UnknownOperator,
                Some(&n.id),
                None,
                Some(format!("node `{}`", n.id)),
            );
        }
    }
    if nodes.is_empty() {
        return expect(ErrorCode::InvalidJob, None, None, Some("no nodes".into()));
    }
    if existing.len() + nodes.len() > MAX_NODES {
        return expect(
            ErrorCode::InvalidJob,
            None,
            None,
            Some(format!("the limit is {MAX_NODES}")),
        );
    }
    let old: HashSet<&str> = existing.iter().map(|n| n.id.as_str()).collect();
    let mut seen = HashSet::new();
    for n in nodes {
        if !valid_id(&n.id) {
            return expect(
                ErrorCode::InvalidJob,
                Some(&n.id),
                None,
                Some(format!("{:?}", n.id)),
            );
        }
        if old.contains(n.id.as_str()) {
            return expect(
                ErrorCode::InvalidJob,
                Some(&n.id),
                None,
                Some("already exists".into()),
            );
        }
        if !seen.insert(n.id.as_str()) {
            return expect(
                ErrorCode::InvalidJob,
                Some(&n.id),
                None,
                Some("appears twice".into()),
            );
        }
    }
    let all: HashSet<&str> = old.iter().copied().chain(seen.iter().copied()).collect();
    for n in nodes {
        let def = builtin(&n.op).expect("checked above");
        for (name, arg) in &n.args {
            let spec = def.args.iter().find(|s| &s.name == name);
            if spec.is_none() && !def.args.is_empty() {
                return expect(
                    ErrorCode::InvalidArgument,
                    Some(&n.id),
                    Some(name),
                    Some(format!("no argument `{name}`")),
                );
            }
            match arg {
                Arg::Ref(r) if !all.contains(r.node.as_str()) => {
                    return expect(
                        ErrorCode::MissingReference,
                        Some(&n.id),
                        Some(name),
                        Some(format!("references `{}`", r.node)),
                    );
                }
                Arg::Lit(v) if spec.is_some_and(|s| kind_mismatch(s.kind, v).is_some()) => {
                    return expect(
                        ErrorCode::InvalidArgument,
                        Some(&n.id),
                        Some(name),
                        Some(format!("argument `{name}`")),
                    );
                }
                _ => {}
            }
        }
        if let Some(spec) = def
            .args
            .iter()
            .find(|s| s.required && !n.args.contains_key(&s.name))
        {
            return expect(
                ErrorCode::InvalidArgument,
                Some(&n.id),
                Some(&spec.name),
                Some(format!("needs argument `{}`", spec.name)),
            );
        }
    }
    if has_cycle(existing.iter().chain(nodes)) {
        // Which node is named depends on the walk; checked against the graph instead.
        return expect(ErrorCode::Cycle, None, None, None);
    }
    for o in outputs {
        if !all.contains(o.as_str()) {
            return expect(
                ErrorCode::InvalidJob,
                None,
                None,
                Some(format!("requested output `{o}`")),
            );
        }
    }
    None
}

fn refs(n: &Node) -> impl Iterator<Item = &str> {
    n.args.values().filter_map(|a| match a {
        Arg::Ref(r) => Some(r.node.as_str()),
        Arg::Lit(_) => None,
    })
}

/// Depth-first search with colours (iterative), on nodes with unique ids.
fn has_cycle<'a>(nodes: impl Iterator<Item = &'a Node>) -> bool {
    let nodes: Vec<&Node> = nodes.collect();
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| refs(n).filter_map(|r| index.get(r).copied()).collect())
        .collect();
    let mut colour = vec![0u8; nodes.len()]; // 0 new, 1 on the stack, 2 done
    for start in 0..nodes.len() {
        if colour[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        colour[start] = 1;
        while let Some(&mut (v, ref mut next)) = stack.last_mut() {
            if let Some(&w) = succ[v].get(*next) {
                *next += 1;
                match colour[w] {
                    1 => return true,
                    0 => {
                        colour[w] = 1;
                        stack.push((w, 0));
                    }
                    _ => {}
                }
            } else {
                colour[v] = 2;
                stack.pop();
            }
        }
    }
    false
}

/// The error matches the prediction, names what it says, and is short.
fn check_error(e: &ErrorReply, want: &Expected, nodes: &[Node]) -> Result<(), TestCaseError> {
    prop_assert!(
        e.message.len() <= MAX_MESSAGE + 64,
        "a {}-byte message",
        e.message.len()
    );
    for f in [&e.node, &e.argument].into_iter().flatten() {
        prop_assert!(
            f.len() <= MAX_NAME + 64,
            "a {}-byte node or argument",
            f.len()
        );
    }
    prop_assert_eq!(e.code, want.code, "{}", shorten(e.message.clone(), 300));
    if want.code == ErrorCode::Cycle {
        return check_cycle(e, nodes);
    }
    prop_assert_eq!(&e.node, &want.node.clone().map(|n| shorten(n, MAX_NAME)));
    prop_assert_eq!(
        &e.argument,
        &want.argument.clone().map(|a| shorten(a, MAX_NAME))
    );
    if let Some(q) = &want.quotes {
        // Quoted whole when it fits in a message; long names are cut in the middle.
        if q.len() < MAX_MESSAGE / 4 {
            prop_assert!(
                e.message.contains(q.as_str()),
                "`{}` not in: {}",
                q,
                e.message
            );
        }
    }
    if let Some(node) = e.node.as_deref().filter(|n| n.len() < 64 && valid_id(n)) {
        prop_assert!(
            e.message.contains(&format!("`{node}`")),
            "node `{node}` not named in: {}",
            e.message
        );
    }
    Ok(())
}

/// A cycle error names a node on a real cycle and lists the cycle: each listed node
/// references the next (`jobs.run`) or is referenced by it (`jobs.extend`, which lists
/// the path in the order of dependencies).
fn check_cycle(e: &ErrorReply, nodes: &[Node]) -> Result<(), TestCaseError> {
    let by_id: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let listed = e.message.rsplit(": ").next().unwrap_or("");
    let path: Vec<&str> = listed.split(" -> ").collect();
    if !e.message.contains("bytes left out") {
        prop_assert!(path.len() >= 2, "no cycle listed in: {}", e.message);
        prop_assert_eq!(path.first(), path.last(), "not a cycle: {}", e.message);
        for id in &path {
            prop_assert!(by_id.contains_key(id), "`{}` is no node: {}", id, e.message);
        }
        let references = |a: &str, b: &str| refs(by_id[a]).any(|r| r == b);
        let forward = path.windows(2).all(|w| references(w[0], w[1]));
        let backward = path.windows(2).all(|w| references(w[1], w[0]));
        prop_assert!(
            forward || backward,
            "not a cycle of references: {}",
            e.message
        );
    }
    let node = e
        .node
        .as_deref()
        .ok_or_else(|| TestCaseError::fail(format!("no node: {}", e.message)))?;
    prop_assert!(
        by_id.contains_key(node) && path.contains(&node),
        "`{node}` is not on the cycle: {}",
        e.message
    );
    Ok(())
}

/// A plan of a whole job: dependencies as referenced, outputs as asked (or the sinks),
/// exactly their ancestors needed, and every dependency ordered first.
fn check_plan(job: &Job, plan: &Plan) -> Result<(), TestCaseError> {
    let n = job.nodes.len();
    let index: HashMap<&str, usize> = job
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    prop_assert_eq!(plan.deps.len(), n);
    for (i, node) in job.nodes.iter().enumerate() {
        let want: BTreeSet<usize> = refs(node).map(|r| index[r]).collect();
        let got: BTreeSet<usize> = plan.deps[i].iter().copied().collect();
        prop_assert_eq!(
            got.len(),
            plan.deps[i].len(),
            "duplicate dependencies of `{}`",
            node.id
        );
        prop_assert_eq!(got, want, "dependencies of `{}`", node.id);
    }
    let referenced: HashSet<usize> = plan.deps.iter().flatten().copied().collect();
    let want_outputs: Vec<String> = if job.outputs.is_empty() {
        (0..n)
            .filter(|i| !referenced.contains(i))
            .map(|i| job.nodes[i].id.clone())
            .collect()
    } else {
        job.outputs.clone()
    };
    prop_assert_eq!(&plan.outputs, &want_outputs);
    check_order(
        &plan.order,
        &plan.deps,
        &plan.needed,
        plan.outputs.iter().map(|o| index[o.as_str()]),
        |_| false,
    )
}

/// `order` holds exactly the nodes the outputs need (minus `known` ones and what only they
/// need), each once, each after its dependencies.
fn check_order(
    order: &[usize],
    deps: &[Vec<usize>],
    needed: &[bool],
    outputs: impl Iterator<Item = usize>,
    known: impl Fn(usize) -> bool,
) -> Result<(), TestCaseError> {
    let mut want = vec![false; deps.len()];
    let mut stack: Vec<usize> = outputs.collect();
    while let Some(i) = stack.pop() {
        if !want[i] && !known(i) {
            want[i] = true;
            stack.extend(&deps[i]);
        }
    }
    prop_assert_eq!(needed, &want[..], "needed nodes");
    let mut pos = vec![usize::MAX; deps.len()];
    for (k, &i) in order.iter().enumerate() {
        prop_assert!(pos[i] == usize::MAX, "node {} twice in the order", i);
        pos[i] = k;
    }
    prop_assert_eq!(order.len(), want.iter().filter(|w| **w).count());
    for &i in order {
        prop_assert!(want[i], "node {} runs but is not needed", i);
        for &d in &deps[i] {
            prop_assert!(
                known(d) || pos[d] < pos[i],
                "node {} runs before its dependency {}",
                i,
                d
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Whole jobs.

fn run_case(g: &JobGen) -> Result<(), TestCaseError> {
    let mut job = build_job(g);
    let result = validate(&mut job);
    let want = if !valid_id(&job.job_id) {
        // An empty id was replaced by a fresh (valid) one.
        prop_assert!(!g.job_id.is_empty());
        expect(ErrorCode::InvalidJob, None, None, Some("job_id".into()))
    } else {
        first_problem(&[], &job.nodes, &job.outputs)
    };
    match (result, want) {
        (Ok((defs, plan)), None) => {
            prop_assert_eq!(defs.len(), job.nodes.len());
            check_plan(&job, &plan)
        }
        (Err(e), Some(want)) => check_error(&e, &want, &job.nodes),
        (Ok(_), Some(want)) => Err(TestCaseError::fail(format!("accepted a job with {want:?}"))),
        (Err(e), None) => Err(TestCaseError::fail(format!("refused a valid job: {e:?}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn random_jobs_get_a_plan_or_the_right_error(g in job_gen()) {
        run_case(&g)?;
    }

    /// Only references among the pool, most nodes complete: many valid plans and cycles.
    #[test]
    fn random_graphs_of_references(
        n in 1usize..40,
        edges in proptest::collection::vec((any::<Index>(), any::<Index>(), 0u8..3), 0..80),
        outputs in proptest::collection::vec(any::<Index>(), 0..3),
    ) {
        // `const` takes one argument; `vec.add` two: up to two references per node.
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| Node {
                id: format!("n{i}"),
                op: "vec.add".into(),
                args: BTreeMap::from([
                    ("a".to_string(), Arg::Lit(Value::Tensor(Tensor::vector(vec![1.0])))),
                    ("b".to_string(), Arg::Lit(Value::Tensor(Tensor::vector(vec![1.0])))),
                ]),
            })
            .collect();
        for (from, to, slot) in edges {
            let (from, to) = (from.index(n), to.index(n));
            let name = ["a", "b", "a"][slot as usize];
            nodes[from].args.insert(name.into(), Arg::reference(&format!("n{to}")));
        }
        let g = JobGen { job_id: "g".into(), nodes: vec![], outputs: vec![], padding: 0 };
        let mut job = build_job(&g);
        job.nodes = nodes;
        job.outputs = outputs.iter().map(|o| format!("n{}", o.index(n))).collect();
        let want = first_problem(&[], &job.nodes, &job.outputs);
        prop_assert!(want.as_ref().is_none_or(|w| w.code == ErrorCode::Cycle), "{:?}", want);
        match (validate(&mut job), want) {
            (Ok((_, plan)), None) => check_plan(&job, &plan)?,
            (Err(e), Some(want)) => check_error(&e, &want, &job.nodes)?,
            (r, w) => prop_assert!(false, "{:?} but expected {:?}", r.map(|(_, p)| p.order), w),
        }
    }
}

/// The documented limits, at and past them.
#[test]
fn limits_are_enforced() {
    let node = |i: usize| Node {
        id: format!("n{i}"),
        op: "const".into(),
        args: BTreeMap::from([("value".to_string(), Arg::Lit(Value::Int(1)))]),
    };
    let job = |nodes: Vec<Node>| Job {
        job_id: "limits".into(),
        submitter: "t".into(),
        nodes,
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: None,
        keep_session: false,
    };
    // MAX_NODES nodes, in a chain: accepted, and ordered.
    let mut chain: Vec<Node> = (0..MAX_NODES).map(node).collect();
    for (i, node) in chain.iter_mut().enumerate().skip(1) {
        node.args
            .insert("value".into(), Arg::reference(&format!("n{}", i - 1)));
    }
    let mut j = job(chain);
    let (_, plan) = validate(&mut j).unwrap();
    assert_eq!(plan.order, (0..MAX_NODES).collect::<Vec<_>>());
    // One more: refused, naming the limit.
    j.nodes.push(node(MAX_NODES));
    let e = validate(&mut j).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidJob);
    assert_eq!(
        e.message,
        format!(
            "the job has {} nodes; the limit is {MAX_NODES}",
            MAX_NODES + 1
        )
    );
    // ... also as a cycle through all of them, whose message is bounded.
    j.nodes.pop();
    j.nodes[0].args.insert(
        "value".into(),
        Arg::reference(&format!("n{}", MAX_NODES - 1)),
    );
    let e = validate(&mut j).unwrap_err();
    assert_eq!(e.code, ErrorCode::Cycle);
    assert!(
        e.message.len() <= MAX_MESSAGE + 64,
        "{} bytes",
        e.message.len()
    );
    assert!(
        e.message
            .starts_with("the job's references form a cycle: n"),
        "{}",
        e.message
    );
    // Ids: MAX_ID_LEN is valid, one more is not; so for the job id.
    let mut j = job(vec![node(0)]);
    j.nodes[0].id = "i".repeat(MAX_ID_LEN);
    validate(&mut j).unwrap();
    j.nodes[0].id.push('i');
    let e = validate(&mut j).unwrap_err();
    assert_eq!(
        (e.code, e.node.as_deref()),
        (ErrorCode::InvalidJob, Some(j.nodes[0].id.as_str()))
    );
    assert!(
        e.message.contains(&format!("1-{MAX_ID_LEN} letters")),
        "{}",
        e.message
    );
    j.nodes[0].id = "ok".into();
    j.job_id = "j".repeat(MAX_ID_LEN);
    validate(&mut j).unwrap();
    j.job_id.push('j');
    let e = validate(&mut j).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidJob);
    assert!(e.message.starts_with("job_id \"jjj"), "{}", e.message);
    // An empty job id is assigned one.
    j.job_id.clear();
    validate(&mut j).unwrap();
    assert!(valid_id(&j.job_id) && !j.job_id.is_empty());
}

/// Ids, names and references of hundreds of KB, and control characters, are refused
/// with errors that name them in a few hundred bytes (the reply must fit in NATS).
#[test]
fn huge_names_give_short_errors() {
    let big = "\u{1}".repeat(300_000);
    let node = |id: &str, op: &str, args: Vec<(&str, Arg)>| Node {
        id: id.into(),
        op: op.into(),
        args: args.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    };
    let cases: Vec<(ErrorCode, Vec<Node>, Vec<String>)> = vec![
        (
            ErrorCode::InvalidJob,
            vec![node(&big, "const", vec![("value", Arg::Lit(Value::Null))])],
            vec![],
        ),
        (
            ErrorCode::UnknownOperator,
            vec![node("a", &big, vec![])],
            vec![],
        ),
        (
            ErrorCode::UnknownOperator,
            vec![node(&big, "const@2", vec![])],
            vec![],
        ),
        (
            ErrorCode::InvalidArgument,
            vec![node("a", "const", vec![(&big, Arg::Lit(Value::Null))])],
            vec![],
        ),
        (
            ErrorCode::MissingReference,
            vec![node("a", "const", vec![("value", Arg::reference(&big))])],
            vec![],
        ),
        (
            ErrorCode::InvalidJob,
            vec![node("a", "const", vec![("value", Arg::Lit(Value::Null))])],
            vec![big.clone()],
        ),
    ];
    for (code, nodes, outputs) in cases {
        let mut job = Job {
            job_id: "j".into(),
            submitter: "t".into(),
            nodes,
            outputs,
            wait_receipts: false,
            timeout_ms: None,
            keep_session: false,
        };
        let e = validate(&mut job).unwrap_err();
        assert_eq!(e.code, code, "{}", shorten(e.message.clone(), 200));
        assert!(
            e.message.len() <= MAX_MESSAGE + 64,
            "{code}: {} bytes",
            e.message.len()
        );
        assert!(
            e.message.contains(" bytes left out) "),
            "{code}: {}",
            e.message
        );
        for f in [&e.node, &e.argument].into_iter().flatten() {
            assert!(f.len() <= MAX_NAME + 64, "{code}: {} bytes", f.len());
        }
    }
    let mut job = Job {
        job_id: big,
        submitter: "t".into(),
        nodes: vec![],
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: None,
        keep_session: false,
    };
    let e = validate(&mut job).unwrap_err();
    assert!(
        e.code == ErrorCode::InvalidJob && e.message.len() <= MAX_MESSAGE + 64,
        "{} bytes",
        e.message.len()
    );
}

/// A literal nested as deep as the wire allows (1019 levels inside a job) validates,
/// hashes (as the cache key does), is measured (as the policy context does) and drops on
/// a release build's worker stack; a literal array of a million numbers is checked.
#[test]
fn deep_and_large_literals() {
    let stack = if cfg!(debug_assertions) {
        32 << 20
    } else {
        2 << 20
    };
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(|| {
            let lit = nested(1019);
            let mut job = Job {
                job_id: "deep".into(),
                submitter: "t".into(),
                nodes: vec![
                    Node {
                        id: "a".into(),
                        op: "const".into(),
                        args: BTreeMap::from([("value".to_string(), Arg::Lit(lit.clone()))]),
                    },
                    Node {
                        id: "b".into(),
                        op: "vec.norm".into(),
                        args: BTreeMap::from([("v".to_string(), Arg::Lit(lit.clone()))]),
                    },
                ],
                outputs: vec!["a".into()],
                wait_receipts: false,
                timeout_ms: None,
                keep_session: false,
            };
            let e = validate(&mut job).unwrap_err();
            assert_eq!(
                (e.code, e.argument.as_deref()),
                (ErrorCode::InvalidArgument, Some("v"))
            );
            assert!(
                e.message
                    .contains("expected a vector of numbers, found array"),
                "{}",
                e.message
            );
            job.nodes.pop();
            validate(&mut job).unwrap();
            let hash = hsync_operators::canonical_hash(&lit);
            assert_ne!(hash, [0; 32]);
            assert!(lit.approx_size() > 1019);
            drop(job);
        })
        .unwrap()
        .join()
        .expect("a deep literal overflowed the worker stack");
    let mut job = Job {
        job_id: "large".into(),
        submitter: "t".into(),
        nodes: vec![Node {
            id: "a".into(),
            op: "vec.norm".into(),
            args: BTreeMap::from([(
                "v".to_string(),
                Arg::Lit(Value::Array(vec![Value::Float(f64::NAN); 1_000_000])),
            )]),
        }],
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: None,
        keep_session: false,
    };
    // A vector of NaNs is a vector: finiteness is the operator's check, when it runs.
    validate(&mut job).unwrap();
    job.nodes[0].args.insert(
        "v".into(),
        Arg::Lit(Value::Array(vec![Value::Str("x".into()); 1_000_000])),
    );
    assert_eq!(
        validate(&mut job).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

// ---------------------------------------------------------------------------------------
// Extensions of a session (`hsync.jobs.extend`).

/// A session of a small valid job: n0 <- n1 <- n2, and n3 alone.
fn base_session() -> Session {
    let mut job = Job {
        job_id: "s".into(),
        submitter: "t".into(),
        nodes: (0..4)
            .map(|i| Node {
                id: format!("n{i}"),
                op: "const".into(),
                args: BTreeMap::from([(
                    "value".to_string(),
                    if (1..3).contains(&i) {
                        Arg::reference(&format!("n{}", i - 1))
                    } else {
                        Arg::Lit(Value::Int(i))
                    },
                )]),
            })
            .collect(),
        outputs: vec![],
        wait_receipts: false,
        timeout_ms: None,
        keep_session: true,
    };
    let (defs, plan) = validate(&mut job).unwrap();
    let n = job.nodes.len();
    Session::new(job, defs, plan.deps, vec![Some(Value::Int(0)); n]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_extensions(gens in proptest::collection::vec(node_gen(), 0..12), outputs in proptest::collection::vec(target(), 0..3)) {
        let mut session = base_session();
        let old: Vec<Node> = session.job().nodes.clone();
        let old_order = session.order().to_vec();
        // References by position may name old nodes or new ones.
        let old_ids: Vec<String> = old.iter().map(|n| n.id.clone()).collect();
        let own = ids_of(&gens, &old_ids);
        let ids: Vec<String> = old_ids.iter().chain(&own).cloned().collect();
        let nodes = build_nodes(&gens, &own, &ids);
        let outputs: Vec<String> = outputs.iter().map(|t| resolve_target(t, &ids)).collect();
        let want = first_problem(&old, &nodes, &outputs);
        let result = futures::executor::block_on(plan_extension(registry(), &mut session, nodes.clone(), outputs.clone()));
        match (result, want) {
            (Ok(plan), None) => {
                prop_assert_eq!(session.len(), old.len() + nodes.len());
                let all = session.job().nodes.clone();
                let index: HashMap<&str, usize> = all.iter().enumerate().map(|(i, n)| (n.id.as_str(), i)).collect();
                for (i, node) in all.iter().enumerate() {
                    let want: BTreeSet<usize> = refs(node).map(|r| index[r]).collect();
                    prop_assert_eq!(plan.deps[i].iter().copied().collect::<BTreeSet<_>>(), want);
                }
                // The session's order is a topological order of everything so far.
                let mut pos = vec![0; all.len()];
                for (k, &i) in session.order().iter().enumerate() {
                    pos[i] = k;
                }
                for (i, ds) in plan.deps.iter().enumerate() {
                    for &d in ds {
                        prop_assert!(pos[d] < pos[i]);
                    }
                }
                let outs = if outputs.is_empty() {
                    let referenced: HashSet<usize> = plan.deps[old.len()..].iter().flatten().copied().collect();
                    (old.len()..all.len()).filter(|i| !referenced.contains(i)).collect::<Vec<_>>()
                } else {
                    outputs.iter().map(|o| index[o.as_str()]).collect()
                };
                // The old nodes have outputs: only new ones run.
                check_order(&plan.order, &plan.deps, &plan.needed, outs.into_iter(), |i| i < old.len())?;
            }
            (Err(e), Some(want)) => {
                check_error(&e, &want, &old.iter().chain(&nodes).cloned().collect::<Vec<_>>())?;
                prop_assert_eq!(session.len(), old.len(), "a refused extension changed the session");
                prop_assert_eq!(session.order(), &old_order[..]);
            }
            (Ok(_), Some(want)) => prop_assert!(false, "accepted an extension with {:?}", want),
            (Err(e), None) => prop_assert!(false, "refused a valid extension: {:?}", e),
        }
    }
}
