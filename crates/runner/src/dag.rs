//! Job validation and planning. Everything here is pure and runs before any node does:
//! a job with an error executes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use hsync_operators::kind_mismatch;
use hsync_protocol::job::{Job, Node};
use hsync_protocol::operator::OperatorDef;
use hsync_protocol::{Arg, ErrorCode, ErrorReply};

/// Most nodes one job may have.
pub const MAX_NODES: usize = 10_000;
pub use hsync_protocol::job::{valid_id, MAX_ID_LEN};

/// A validated job: the nodes the requested outputs need, in a topological order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Indexes into `job.nodes`, dependencies first.
    pub order: Vec<usize>,
    /// For each node index, the node indexes it depends on (deduplicated).
    pub deps: Vec<Vec<usize>>,
    /// Requested output node ids.
    pub outputs: Vec<String>,
    /// Node ids that are needed (subset of all nodes): lazy computation.
    pub needed: Vec<bool>,
}

fn invalid_job(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidJob, msg)
}


/// Checks the job's structure and the literal arguments against the operators'
/// argument specs. `defs[i]` is the definition of `job.nodes[i]`'s operator.
pub fn plan(job: &Job, defs: &[&OperatorDef]) -> Result<Plan, ErrorReply> {
    if job.nodes.is_empty() {
        return Err(invalid_job("the job has no nodes"));
    }
    if job.nodes.len() > MAX_NODES {
        return Err(invalid_job(format!(
            "the job has {} nodes; the limit is {MAX_NODES}",
            job.nodes.len()
        )));
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(job.nodes.len());
    for (i, node) in job.nodes.iter().enumerate() {
        if !valid_id(&node.id) {
            return Err(invalid_job(format!(
                "node id {:?} is invalid: use 1-{MAX_ID_LEN} letters, digits, '-' or '_'",
                node.id
            ))
            .at_node(&node.id));
        }
        if index.insert(&node.id, i).is_some() {
            return Err(invalid_job(format!("node id `{}` appears twice", node.id)).at_node(&node.id));
        }
    }

    let mut deps = Vec::with_capacity(job.nodes.len());
    for (i, node) in job.nodes.iter().enumerate() {
        deps.push(check_node(node, defs[i], |id| index.get(id).copied(), "not a node of this job")?);
    }

    let order = topological_order(job, &deps)?;

    // Requested outputs: as given, or the sinks (nodes nobody references).
    let outputs: Vec<String> = if job.outputs.is_empty() {
        let mut referenced = vec![false; job.nodes.len()];
        for d in deps.iter().flatten() {
            referenced[*d] = true;
        }
        job.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| !referenced[*i])
            .map(|(_, n)| n.id.clone())
            .collect()
    } else {
        for o in &job.outputs {
            if !index.contains_key(o.as_str()) {
                return Err(invalid_job(format!("requested output `{o}` is not a node of this job")));
            }
        }
        job.outputs.clone()
    };

    // Lazy computation: only the ancestors of the requested outputs run.
    let mut needed = vec![false; job.nodes.len()];
    let mut stack: Vec<usize> = outputs.iter().map(|o| index[o.as_str()]).collect();
    while let Some(i) = stack.pop() {
        if !needed[i] {
            needed[i] = true;
            stack.extend(deps[i].iter().copied());
        }
    }
    let order = order.into_iter().filter(|i| needed[*i]).collect();
    Ok(Plan {
        order,
        deps,
        outputs,
        needed,
    })
}

/// Checks one node against its operator's argument specs: known argument names, literal
/// kinds, required arguments, and references that `lookup` resolves to node indexes.
/// Returns the node's dependencies (deduplicated, in argument order). `missing` ends the
/// message of a dangling reference ("references `x`, which is <missing>").
pub fn check_node(
    node: &Node,
    def: &OperatorDef,
    lookup: impl Fn(&str) -> Option<usize>,
    missing: &str,
) -> Result<Vec<usize>, ErrorReply> {
    let mut deps = Vec::new();
    let mut seen = BTreeSet::new();
    for (name, arg) in &node.args {
        let spec = def.args.iter().find(|s| &s.name == name);
        if spec.is_none() && !def.args.is_empty() {
            let known: Vec<&str> = def.args.iter().map(|s| s.name.as_str()).collect();
            return Err(ErrorReply::new(
                ErrorCode::InvalidArgument,
                format!(
                    "node `{}`: operator `{}` has no argument `{name}` (it takes: {})",
                    node.id,
                    def.id,
                    known.join(", ")
                ),
            )
            .at_node(&node.id)
            .at_argument(name));
        }
        match arg {
            Arg::Ref(r) => {
                let Some(j) = lookup(r.node.as_str()) else {
                    return Err(ErrorReply::new(
                        ErrorCode::MissingReference,
                        format!(
                            "node `{}` argument `{name}` references `{}`, which is {missing}",
                            node.id, r.node
                        ),
                    )
                    .at_node(&node.id)
                    .at_argument(name));
                };
                if seen.insert(j) {
                    deps.push(j);
                }
            }
            Arg::Lit(v) => {
                if let Some(spec) = spec {
                    if let Some(why) = kind_mismatch(spec.kind, v) {
                        return Err(ErrorReply::new(
                            ErrorCode::InvalidArgument,
                            format!("node `{}` argument `{name}`: {why}", node.id),
                        )
                        .at_node(&node.id)
                        .at_argument(name));
                    }
                }
            }
        }
    }
    for spec in def.args.iter().filter(|s| s.required) {
        if !node.args.contains_key(&spec.name) {
            return Err(ErrorReply::new(
                ErrorCode::InvalidArgument,
                format!("node `{}`: operator `{}` needs argument `{}`", node.id, def.id, spec.name),
            )
            .at_node(&node.id)
            .at_argument(&spec.name));
        }
    }
    Ok(deps)
}

/// Kahn's algorithm; on a cycle, names the nodes on it.
fn topological_order(job: &Job, deps: &[Vec<usize>]) -> Result<Vec<usize>, ErrorReply> {
    let n = deps.len();
    let mut indegree = vec![0usize; n];
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        indegree[i] = ds.len();
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &j in &dependents[i] {
            indegree[j] -= 1;
            if indegree[j] == 0 {
                queue.push_back(j);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk dependencies among the remaining nodes until one repeats: that is a cycle.
    let remaining: BTreeMap<usize, ()> = (0..n).filter(|&i| indegree[i] > 0).map(|i| (i, ())).collect();
    let start = *remaining.keys().next().unwrap_or(&0);
    let mut path = vec![start];
    let mut pos: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    while let Some(&next) = deps[cur].iter().find(|d| remaining.contains_key(d)) {
        if let Some(&p) = pos.get(&next) {
            let cycle: Vec<&str> = path[p..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&i| job.nodes[i].id.as_str())
                .collect();
            return Err(ErrorReply::new(
                ErrorCode::Cycle,
                format!("the job's references form a cycle: {}", cycle.join(" -> ")),
            )
            .at_node(&job.nodes[next].id));
        }
        pos.insert(next, path.len());
        path.push(next);
        cur = next;
    }
    Err(ErrorReply::new(ErrorCode::Cycle, "the job's references form a cycle"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hsync_protocol::Value;

    /// A job node from literal parts (shared by the session tests).
    pub(crate) fn node(id: &str, op: &str, args: &[(&str, Arg)]) -> Node {
        Node {
            id: id.into(),
            op: op.into(),
            args: args.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        }
    }

    fn job(nodes: Vec<Node>) -> Job {
        Job {
            job_id: "j".into(),
            submitter: "t".into(),
            nodes,
            outputs: vec![],
            wait_receipts: false,
            timeout_ms: None,
            keep_session: false,
        }
    }

    fn defs(job: &Job) -> Vec<&'static OperatorDef> {
        job.nodes
            .iter()
            .map(|n| &hsync_operators::find(&n.op).unwrap().def)
            .collect()
    }

    fn lit(x: f64) -> Arg {
        Arg::Lit(Value::Float(x))
    }

    #[test]
    fn orders_dependencies_first_and_skips_unneeded_nodes() {
        let mut j = job(vec![
            node("c", "vec.norm", &[("v", Arg::reference("b"))]),
            node("a", "const", &[("value", lit(1.0))]),
            node("b", "vec.scale", &[("v", Arg::reference("a")), ("k", lit(2.0))]),
            node("unused", "const", &[("value", lit(1.0))]),
        ]);
        j.outputs = vec!["c".into()];
        let p = plan(&j, &defs(&j)).unwrap();
        let ids: Vec<&str> = p.order.iter().map(|&i| j.nodes[i].id.as_str()).collect();
        assert_eq!(ids, vec!["a", "b", "c"]);
        assert!(!p.needed[3]);
    }

    #[test]
    fn sinks_are_the_default_outputs() {
        let j = job(vec![
            node("a", "const", &[("value", lit(1.0))]),
            node("b", "const", &[("value", Arg::reference("a"))]),
            node("z", "const", &[("value", lit(2.0))]),
        ]);
        let p = plan(&j, &defs(&j)).unwrap();
        assert_eq!(p.outputs, vec!["b".to_string(), "z".to_string()]);
    }

    #[test]
    fn cycle_is_named() {
        let j = job(vec![
            node("a", "const", &[("value", Arg::reference("b"))]),
            node("b", "const", &[("value", Arg::reference("a"))]),
        ]);
        let e = plan(&j, &defs(&j)).unwrap_err();
        assert_eq!(e.code, ErrorCode::Cycle);
        assert!(e.message.contains("a -> b -> a") || e.message.contains("b -> a -> b"), "{}", e.message);
    }

    #[test]
    fn missing_reference_names_node_and_argument() {
        let j = job(vec![node("a", "vec.norm", &[("v", Arg::reference("ghost"))])]);
        let e = plan(&j, &defs(&j)).unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingReference);
        assert_eq!(e.node.as_deref(), Some("a"));
        assert_eq!(e.argument.as_deref(), Some("v"));
        assert!(e.message.contains("ghost"));
    }

    #[test]
    fn wrong_literal_type_and_missing_argument() {
        let j = job(vec![node("a", "vec.norm", &[("v", Arg::Lit(Value::Str("x".into())))])]);
        let e = plan(&j, &defs(&j)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert!(e.message.contains("expected a vector"), "{}", e.message);
        let j = job(vec![node("a", "vec.add", &[("a", Arg::Lit(Value::Array(vec![])))])]);
        let e = plan(&j, &defs(&j)).unwrap_err();
        assert_eq!(e.argument.as_deref(), Some("b"));
        let v = Arg::Lit(Value::Array(vec![Value::Float(3.0), Value::Float(4.0)]));
        let j = job(vec![node("a", "vec.norm", &[("v", v), ("w", lit(1.0))])]);
        assert_eq!(plan(&j, &defs(&j)).unwrap_err().argument.as_deref(), Some("w"));
    }

    #[test]
    fn structural_errors() {
        assert_eq!(plan(&job(vec![]), &[]).unwrap_err().code, ErrorCode::InvalidJob);
        let j = job(vec![
            node("a", "const", &[("value", lit(1.0))]),
            node("a", "const", &[("value", lit(1.0))]),
        ]);
        assert!(plan(&j, &defs(&j)).unwrap_err().message.contains("twice"));
        let j = job(vec![node("a b", "const", &[("value", lit(1.0))])]);
        assert_eq!(plan(&j, &defs(&j)).unwrap_err().code, ErrorCode::InvalidJob);
    }

    proptest::proptest! {
        #[test]
        fn random_dags_get_a_valid_order(n in 1usize..40, edges in proptest::collection::vec((0usize..40, 0usize..40), 0..80)) {
            // Edges only from lower to higher index: always acyclic.
            let mut nodes: Vec<Node> = (0..n).map(|i| node(&format!("n{i}"), "const", &[("value", lit(1.0))])).collect();
            for (a, b) in edges {
                let (a, b) = (a % n, b % n);
                if a < b {
                    nodes[b].args.insert("value".into(), Arg::reference(&format!("n{a}")));
                }
            }
            let j = job(nodes);
            let p = plan(&j, &defs(&j)).unwrap();
            let mut pos = vec![usize::MAX; n];
            for (k, &i) in p.order.iter().enumerate() { pos[i] = k; }
            for &i in &p.order {
                for &d in &p.deps[i] {
                    proptest::prop_assert!(pos[d] < pos[i]);
                }
            }
        }
    }
}
