//! Graph operators over edge lists: topological sort and shortest paths.
//!
//! Node names are strings or integers (integral floats count as integers). For every
//! tie-break, integers sort before strings, integers numerically and strings byte-wise, so
//! the results depend only on the set of edges, never on their order or on hashing.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;

use super::{get, invalid, Args};
use hsync_protocol::{ErrorCode, ErrorReply, Value};

/// Most edges, and most extra nodes, a graph operator accepts.
pub const MAX_EDGES: usize = 1_000_000;

/// A node name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Name {
    Int(i64),
    Str(String),
}

impl Name {
    fn parse(v: &Value) -> Option<Name> {
        match v {
            Value::Str(s) => Some(Name::Str(s.clone())),
            _ => v.as_i64().map(Name::Int),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Name::Int(i) => Value::Int(*i),
            Name::Str(s) => Value::Str(s.clone()),
        }
    }
}

impl fmt::Display for Name {
    /// Quoted and escaped, cut after 64 characters: names come from untrusted input.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Name::Int(i) => write!(f, "{i}"),
            Name::Str(s) if s.chars().count() > 64 => {
                write!(f, "{:?}...", s.chars().take(64).collect::<String>())
            }
            Name::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// Gives names dense ids as they are met; `finish` renumbers them in name order.
#[derive(Default)]
struct Interner {
    ids: BTreeMap<Name, usize>,
}

impl Interner {
    fn id(&mut self, name: Name) -> usize {
        let next = self.ids.len();
        *self.ids.entry(name).or_insert(next)
    }

    /// The names in sorted order, and for each id its rank in that order.
    fn finish(self) -> (Vec<Name>, Vec<usize>) {
        let mut rank = vec![0; self.ids.len()];
        let mut names = Vec::with_capacity(self.ids.len());
        for (k, (name, id)) in self.ids.into_iter().enumerate() {
            rank[id] = k;
            names.push(name);
        }
        (names, rank)
    }
}

fn name_of(arg: &str, what: &str, v: &Value) -> Result<Name, ErrorReply> {
    Name::parse(v).ok_or_else(|| {
        invalid(
            arg,
            format!(
                "{what}: node names must be strings or integers, found {}",
                v.type_name()
            ),
        )
    })
}

fn node_arg(args: &Args, arg: &str) -> Result<Name, ErrorReply> {
    let v = get(args, arg)?;
    Name::parse(v).ok_or_else(|| {
        invalid(
            arg,
            format!("expected a node name (string or integer), found {}", v.type_name()),
        )
    })
}

/// Calls `f` with the index and items of every row of a list of arrays (or of a 2-D tensor).
fn for_each_row(
    arg: &str,
    v: &Value,
    expected: &str,
    mut f: impl FnMut(usize, &[Value]) -> Result<(), ErrorReply>,
) -> Result<(), ErrorReply> {
    let too_many = |n: usize| invalid(arg, format!("has {n} entries, more than the limit of {MAX_EDGES}"));
    match v {
        Value::Array(rows) => {
            if rows.len() > MAX_EDGES {
                return Err(too_many(rows.len()));
            }
            for (i, row) in rows.iter().enumerate() {
                match row {
                    Value::Array(items) => f(i, items)?,
                    Value::Tensor(t) if t.shape().len() == 1 => {
                        let items: Vec<Value> = t.data().iter().map(|&x| Value::Float(x)).collect();
                        f(i, &items)?
                    }
                    other => {
                        return Err(invalid(
                            arg,
                            format!("entry {i}: expected {expected}, found {}", other.type_name()),
                        ))
                    }
                }
            }
            Ok(())
        }
        Value::Tensor(t) if t.shape().len() == 2 => {
            let (rows, cols) = (t.shape()[0], t.shape()[1]);
            if rows > MAX_EDGES {
                return Err(too_many(rows));
            }
            for (i, row) in t.data().chunks(cols.max(1)).take(rows).enumerate() {
                let items: Vec<Value> = row.iter().map(|&x| Value::Float(x)).collect();
                f(i, &items)?;
            }
            Ok(())
        }
        other => Err(invalid(
            arg,
            format!("expected a list of {expected}, found {}", other.type_name()),
        )),
    }
}

/// Edges as (from id, to id, weight); the weight is 0 when `weighted` is false.
fn parse_edges(args: &Args, names: &mut Interner, weighted: bool) -> Result<Vec<(usize, usize, f64)>, ErrorReply> {
    let (width, expected) = if weighted {
        (3, "[from, to, weight] triples")
    } else {
        (2, "[from, to] pairs")
    };
    let mut edges = Vec::new();
    for_each_row("edges", get(args, "edges")?, expected, |i, row| {
        if row.len() != width {
            return Err(invalid(
                "edges",
                format!(
                    "entry {i}: expected {expected}, found an array of {} elements",
                    row.len()
                ),
            ));
        }
        let what = format!("entry {i}");
        let a = names.id(name_of("edges", &what, &row[0])?);
        let b = names.id(name_of("edges", &what, &row[1])?);
        let w = if weighted {
            match row[2].as_f64() {
                // `+ 0.0` turns -0 into +0.
                Some(w) if w.is_finite() && w >= 0.0 => w + 0.0,
                _ => {
                    return Err(invalid(
                        "edges",
                        format!(
                            "entry {i}: weight must be a non-negative finite number, found {}",
                            show(&row[2])
                        ),
                    ))
                }
            }
        } else {
            0.0
        };
        edges.push((a, b, w));
        Ok(())
    })?;
    Ok(edges)
}

fn show(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => x.to_string(),
        None => v.type_name().to_string(),
    }
}

/// Adjacency in compressed form: the out-edges of `u` are `targets[offsets[u]..offsets[u + 1]]`,
/// sorted by (target, weight).
fn adjacency(n: usize, edges: &[(usize, usize, f64)]) -> (Vec<usize>, Vec<(usize, f64)>) {
    let mut offsets = vec![0usize; n + 1];
    for &(a, _, _) in edges {
        offsets[a + 1] += 1;
    }
    for u in 0..n {
        offsets[u + 1] += offsets[u];
    }
    let mut fill = offsets.clone();
    let mut targets = vec![(0usize, 0.0f64); edges.len()];
    for &(a, b, w) in edges {
        targets[fill[a]] = (b, w);
        fill[a] += 1;
    }
    for u in 0..n {
        targets[offsets[u]..offsets[u + 1]].sort_unstable_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
    }
    (offsets, targets)
}

/// `graph.toposort`: Kahn's algorithm, always taking the smallest ready name next.
pub(crate) fn toposort(args: &Args) -> Result<Value, ErrorReply> {
    let mut interner = Interner::default();
    let edges = parse_edges(args, &mut interner, false)?;
    if let Some(nodes) = args.get("nodes") {
        match nodes {
            Value::Tensor(t) if t.shape().len() == 1 => {
                if t.data().len() > MAX_EDGES {
                    return Err(invalid(
                        "nodes",
                        format!("has {} entries, more than the limit of {MAX_EDGES}", t.data().len()),
                    ));
                }
                for (i, &x) in t.data().iter().enumerate() {
                    interner.id(name_of("nodes", &format!("entry {i}"), &Value::Float(x))?);
                }
            }
            Value::Array(items) => {
                if items.len() > MAX_EDGES {
                    return Err(invalid(
                        "nodes",
                        format!("has {} entries, more than the limit of {MAX_EDGES}", items.len()),
                    ));
                }
                for (i, x) in items.iter().enumerate() {
                    interner.id(name_of("nodes", &format!("entry {i}"), x)?);
                }
            }
            other => {
                return Err(invalid(
                    "nodes",
                    format!("expected a list of node names, found {}", other.type_name()),
                ))
            }
        }
    }
    let (names, rank) = interner.finish();
    let n = names.len();
    let edges: Vec<(usize, usize, f64)> = edges.into_iter().map(|(a, b, w)| (rank[a], rank[b], w)).collect();
    let (offsets, targets) = adjacency(n, &edges);
    let mut indegree = vec![0usize; n];
    for &(_, b, _) in &edges {
        indegree[b] += 1;
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..n).filter(|&u| indegree[u] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(u)) = ready.pop() {
        order.push(u);
        for &(v, _) in &targets[offsets[u]..offsets[u + 1]] {
            indegree[v] -= 1;
            if indegree[v] == 0 {
                ready.push(Reverse(v));
            }
        }
    }
    if order.len() < n {
        return Err(cycle_error(&names, &edges, &indegree));
    }
    Ok(Value::Array(order.into_iter().map(|u| names[u].to_value()).collect()))
}

/// Names a cycle among the nodes Kahn's algorithm could not place (those with a positive
/// remaining in-degree; each has a predecessor among them, so walking back must loop).
fn cycle_error(names: &[Name], edges: &[(usize, usize, f64)], indegree: &[usize]) -> ErrorReply {
    let stuck = |u: usize| indegree[u] > 0;
    let mut pred = vec![usize::MAX; names.len()];
    for &(a, b, _) in edges {
        if stuck(a) && stuck(b) {
            pred[b] = pred[b].min(a);
        }
    }
    let Some(start) = (0..names.len()).find(|&u| stuck(u)) else {
        return ErrorReply::new(ErrorCode::Internal, "toposort stopped early without a cycle");
    };
    // Walk back until a node repeats: that node lies on a cycle.
    let mut seen = vec![false; names.len()];
    let mut u = start;
    while !seen[u] {
        seen[u] = true;
        u = pred[u];
        if u == usize::MAX {
            return ErrorReply::new(ErrorCode::Internal, "toposort cycle walk lost its way");
        }
    }
    let mut cycle = vec![u];
    let mut v = pred[u];
    while v != u && cycle.len() <= names.len() {
        cycle.push(v);
        v = pred[v];
    }
    // Forward order, starting from the smallest name on the cycle.
    cycle.reverse();
    let first = (0..cycle.len()).min_by_key(|&i| cycle[i]).unwrap_or(0);
    cycle.rotate_left(first);
    const SHOWN: usize = 8;
    let mut path: Vec<String> = cycle.iter().take(SHOWN).map(|&u| names[u].to_string()).collect();
    if cycle.len() > SHOWN {
        path.push(format!("... ({} nodes in all)", cycle.len()));
    }
    path.push(names[cycle[0]].to_string());
    invalid(
        "edges",
        format!(
            "contain a cycle through node {}: {}",
            names[cycle[0]],
            path.join(" -> ")
        ),
    )
}

/// `graph.shortest_path`: Dijkstra over directed, non-negatively weighted edges.
///
/// Nodes are settled in (distance, name) order; among equally short routes into a node, the
/// smallest-named predecessor settled before it wins. Unreachable `to` gives
/// `{"path": [], "distance": null}`.
pub(crate) fn shortest_path(args: &Args) -> Result<Value, ErrorReply> {
    let mut interner = Interner::default();
    let edges = parse_edges(args, &mut interner, true)?;
    let (from, to) = (node_arg(args, "from")?, node_arg(args, "to")?);
    let (names, rank) = interner.finish();
    let n = names.len();
    let find = |arg: &str, name: &Name| {
        names
            .binary_search(name)
            .map_err(|_| invalid(arg, format!("node {name} does not appear in `edges`")))
    };
    let (s, t) = (find("from", &from)?, find("to", &to)?);
    let edges: Vec<(usize, usize, f64)> = edges.into_iter().map(|(a, b, w)| (rank[a], rank[b], w)).collect();
    let (offsets, targets) = adjacency(n, &edges);

    let mut dist = vec![f64::INFINITY; n];
    let mut pred = vec![usize::MAX; n];
    let mut done = vec![false; n];
    // Distances are non-negative and finite, so their bit patterns order like their values.
    let mut heap = BinaryHeap::new();
    dist[s] = 0.0;
    heap.push(Reverse((0.0f64.to_bits(), s)));
    while let Some(Reverse((bits, u))) = heap.pop() {
        if done[u] {
            continue;
        }
        done[u] = true;
        if u == t {
            break;
        }
        let d = f64::from_bits(bits);
        for &(v, w) in &targets[offsets[u]..offsets[u + 1]] {
            if done[v] {
                continue;
            }
            let nd = d + w;
            if !nd.is_finite() {
                return Err(invalid(
                    "edges",
                    "path lengths overflow a 64-bit float (weights are too large)",
                ));
            }
            if nd < dist[v] {
                dist[v] = nd;
                pred[v] = u;
                heap.push(Reverse((nd.to_bits(), v)));
            } else if nd == dist[v] && u < pred[v] {
                pred[v] = u;
            }
        }
    }

    let mut out = BTreeMap::new();
    if !done[t] {
        out.insert("path".to_string(), Value::Array(Vec::new()));
        out.insert("distance".to_string(), Value::Null);
        return Ok(Value::Map(out));
    }
    let mut path = vec![t];
    let mut u = t;
    while u != s {
        u = pred[u];
        if u == usize::MAX || path.len() > n {
            return Err(ErrorReply::new(
                ErrorCode::Internal,
                "shortest path: broken predecessor chain",
            ));
        }
        path.push(u);
    }
    path.reverse();
    out.insert(
        "path".to_string(),
        Value::Array(path.into_iter().map(|u| names[u].to_value()).collect()),
    );
    out.insert("distance".to_string(), Value::Float(dist[t]));
    Ok(Value::Map(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{canonical_hash, find};
    use hsync_protocol::Tensor;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn s(x: &str) -> Value {
        Value::Str(x.to_string())
    }

    fn pairs(edges: &[(&str, &str)]) -> Value {
        Value::Array(edges.iter().map(|(a, b)| Value::Array(vec![s(a), s(b)])).collect())
    }

    fn triples(edges: &[(&str, &str, f64)]) -> Value {
        Value::Array(
            edges
                .iter()
                .map(|(a, b, w)| Value::Array(vec![s(a), s(b), Value::Float(*w)]))
                .collect(),
        )
    }

    fn names(xs: &[&str]) -> Value {
        Value::Array(xs.iter().map(|x| s(x)).collect())
    }

    fn run(id: &str, a: &Args) -> Result<Value, ErrorReply> {
        (find(id).unwrap().run)(a)
    }

    #[test]
    fn toposort_small_dag() {
        // The classic "shirt, tie, jacket" DAG plus an isolated vertex.
        let edges = pairs(&[
            ("undershorts", "pants"),
            ("undershorts", "shoes"),
            ("pants", "belt"),
            ("pants", "shoes"),
            ("belt", "jacket"),
            ("shirt", "belt"),
            ("shirt", "tie"),
            ("tie", "jacket"),
            ("socks", "shoes"),
        ]);
        let a = args(&[("edges", edges), ("nodes", names(&["watch"]))]);
        let out = run("graph.toposort", &a).unwrap();
        assert_eq!(
            out,
            names(&[
                "shirt",
                "socks",
                "tie",
                "undershorts",
                "pants",
                "belt",
                "jacket",
                "shoes",
                "watch"
            ])
        );
    }

    #[test]
    fn toposort_is_independent_of_edge_order_and_deterministic() {
        let e = [("d", "a"), ("c", "a"), ("b", "a"), ("e", "d"), ("e", "b")];
        let mut rev = e;
        rev.reverse();
        let a1 = args(&[("edges", pairs(&e))]);
        let a2 = args(&[("edges", pairs(&rev))]);
        let o1 = run("graph.toposort", &a1).unwrap();
        assert_eq!(o1, names(&["c", "e", "b", "d", "a"]));
        assert_eq!(o1, run("graph.toposort", &a2).unwrap());
        assert_eq!(
            canonical_hash(&o1),
            canonical_hash(&run("graph.toposort", &a1).unwrap())
        );
    }

    #[test]
    fn toposort_integer_names_sort_numerically_before_strings() {
        let edges = Value::Array(vec![
            Value::Array(vec![Value::Int(10), Value::Int(2)]),
            Value::Array(vec![Value::Float(9.0), s("x")]),
        ]);
        let a = args(&[("edges", edges), ("nodes", Value::Array(vec![s("a"), Value::Int(3)]))]);
        let out = run("graph.toposort", &a).unwrap();
        assert_eq!(
            out,
            Value::Array(vec![
                Value::Int(3),
                Value::Int(9),
                Value::Int(10),
                Value::Int(2),
                s("a"),
                s("x")
            ])
        );
        // A 2-D tensor of integral values is an edge list too.
        let t = Value::Tensor(Tensor::matrix(2, 2, vec![1.0, 0.0, 2.0, 1.0]).unwrap());
        let out = run("graph.toposort", &args(&[("edges", t)])).unwrap();
        assert_eq!(out, Value::Array(vec![Value::Int(2), Value::Int(1), Value::Int(0)]));
        assert_eq!(
            run("graph.toposort", &args(&[("edges", Value::Array(vec![]))])).unwrap(),
            Value::Array(vec![])
        );
    }

    #[test]
    fn toposort_reports_a_node_on_the_cycle() {
        // `a` feeds the cycle b -> c -> d -> b and `e` hangs below it.
        let edges = pairs(&[("a", "b"), ("b", "c"), ("c", "d"), ("d", "b"), ("d", "e")]);
        let err = run("graph.toposort", &args(&[("edges", edges)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.argument.as_deref(), Some("edges"));
        assert!(
            err.message
                .contains(r#"cycle through node "b": "b" -> "c" -> "d" -> "b""#),
            "{}",
            err.message
        );
        let err = run("graph.toposort", &args(&[("edges", pairs(&[("x", "x")]))])).unwrap_err();
        assert!(
            err.message.contains(r#"cycle through node "x": "x" -> "x""#),
            "{}",
            err.message
        );
    }

    #[test]
    fn toposort_rejects_malformed_edges() {
        let cases = [
            (s("a"), "expected a list of [from, to] pairs, found string"),
            (
                Value::Array(vec![s("a")]),
                "entry 0: expected [from, to] pairs, found string",
            ),
            (
                Value::Array(vec![Value::Array(vec![s("a")])]),
                "entry 0: expected [from, to] pairs, found an array of 1",
            ),
            (
                Value::Array(vec![Value::Array(vec![s("a"), Value::Float(f64::NAN)])]),
                "entry 0: node names must be strings or integers, found float",
            ),
            (
                Value::Array(vec![Value::Array(vec![Value::Null, s("a")])]),
                "node names must be strings or integers, found null",
            ),
        ];
        for (edges, want) in cases {
            let err = run("graph.toposort", &args(&[("edges", edges)])).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument);
            assert!(err.message.contains(want), "{} / {want}", err.message);
        }
        let err = run(
            "graph.toposort",
            &args(&[("edges", pairs(&[])), ("nodes", Value::Int(3))]),
        )
        .unwrap_err();
        assert_eq!(err.argument.as_deref(), Some("nodes"));
        let err = run("graph.toposort", &args(&[])).unwrap_err();
        assert!(err.message.contains("`edges`: missing"), "{}", err.message);
    }

    #[test]
    fn graphs_are_size_limited() {
        let t = Value::Tensor(Tensor::matrix(MAX_EDGES + 1, 2, vec![0.0; 2 * (MAX_EDGES + 1)]).unwrap());
        let err = run("graph.toposort", &args(&[("edges", t)])).unwrap_err();
        assert!(err.message.contains("more than the limit"), "{}", err.message);
        let nodes = Value::Tensor(Tensor::vector(vec![0.0; MAX_EDGES + 1]));
        let err = run("graph.toposort", &args(&[("edges", pairs(&[])), ("nodes", nodes)])).unwrap_err();
        assert_eq!(err.argument.as_deref(), Some("nodes"));
    }

    fn sp(edges: Value, from: &str, to: &str) -> Result<Value, ErrorReply> {
        run(
            "graph.shortest_path",
            &args(&[("edges", edges), ("from", s(from)), ("to", s(to))]),
        )
    }

    fn answer(path: &[&str], distance: f64) -> Value {
        let mut m = BTreeMap::new();
        m.insert("path".to_string(), names(path));
        m.insert("distance".to_string(), Value::Float(distance));
        Value::Map(m)
    }

    const ROADS: [(&str, &str, f64); 9] = [
        ("s", "a", 7.0),
        ("s", "b", 9.0),
        ("s", "f", 14.0),
        ("a", "b", 10.0),
        ("a", "c", 15.0),
        ("b", "c", 11.0),
        ("b", "f", 2.0),
        ("c", "e", 6.0),
        ("f", "e", 9.0),
    ];

    #[test]
    fn shortest_path_known_answer() {
        // The textbook Dijkstra example: s -> b -> f -> e has length 9 + 2 + 9 = 20.
        let out = sp(triples(&ROADS), "s", "e").unwrap();
        assert_eq!(out, answer(&["s", "b", "f", "e"], 20.0));
        assert_eq!(sp(triples(&ROADS), "s", "s").unwrap(), answer(&["s"], 0.0));
        // Integer weights and an integer-named tensor edge list work too.
        let t = Value::Tensor(Tensor::matrix(3, 3, vec![0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 0.0, 2.0, 5.0]).unwrap());
        let a = args(&[("edges", t), ("from", Value::Int(0)), ("to", Value::Int(2))]);
        let out = run("graph.shortest_path", &a).unwrap();
        let mut m = BTreeMap::new();
        m.insert(
            "path".to_string(),
            Value::Array(vec![Value::Int(0), Value::Int(1), Value::Int(2)]),
        );
        m.insert("distance".to_string(), Value::Float(2.0));
        assert_eq!(out, Value::Map(m));
    }

    #[test]
    fn shortest_path_is_deterministic_under_ties_and_edge_order() {
        // Two equally short routes s -> x -> t and s -> y -> t, plus a parallel edge.
        let e = [
            ("s", "y", 1.0),
            ("s", "x", 1.0),
            ("y", "t", 1.0),
            ("x", "t", 1.0),
            ("x", "t", 3.0),
        ];
        let mut rev = e;
        rev.reverse();
        let o1 = sp(triples(&e), "s", "t").unwrap();
        assert_eq!(o1, answer(&["s", "x", "t"], 2.0));
        assert_eq!(o1, sp(triples(&rev), "s", "t").unwrap());
        let mut shuffled = ROADS;
        shuffled.rotate_left(4);
        shuffled.swap(0, 7);
        let h1 = canonical_hash(&sp(triples(&ROADS), "s", "e").unwrap());
        assert_eq!(h1, canonical_hash(&sp(triples(&shuffled), "s", "e").unwrap()));
        assert_eq!(h1, canonical_hash(&sp(triples(&ROADS), "s", "e").unwrap()));
    }

    #[test]
    fn shortest_path_unreachable_is_null() {
        let out = sp(triples(&ROADS), "e", "s").unwrap();
        let mut m = BTreeMap::new();
        m.insert("path".to_string(), Value::Array(vec![]));
        m.insert("distance".to_string(), Value::Null);
        assert_eq!(out, Value::Map(m));
    }

    #[test]
    fn shortest_path_rejects_bad_arguments() {
        let err = sp(triples(&[("a", "b", -1.0)]), "a", "b").unwrap_err();
        assert_eq!(err.argument.as_deref(), Some("edges"));
        assert!(
            err.message
                .contains("entry 0: weight must be a non-negative finite number, found -1"),
            "{}",
            err.message
        );
        for w in [f64::NAN, f64::INFINITY] {
            let err = sp(triples(&[("a", "b", w)]), "a", "b").unwrap_err();
            assert!(err.message.contains("non-negative finite"), "{}", err.message);
        }
        let err = sp(pairs(&[("a", "b")]), "a", "b").unwrap_err();
        assert!(
            err.message
                .contains("expected [from, to, weight] triples, found an array of 2"),
            "{}",
            err.message
        );
        let err = sp(triples(&ROADS), "s", "nowhere").unwrap_err();
        assert_eq!(err.argument.as_deref(), Some("to"));
        assert!(
            err.message.contains(r#"node "nowhere" does not appear in `edges`"#),
            "{}",
            err.message
        );
        let err = sp(triples(&ROADS), "nowhere", "s").unwrap_err();
        assert_eq!(err.argument.as_deref(), Some("from"));
        let a = args(&[("edges", triples(&ROADS)), ("from", Value::Bool(true)), ("to", s("e"))]);
        let err = run("graph.shortest_path", &a).unwrap_err();
        assert!(err.message.contains("found bool"), "{}", err.message);
        let huge = triples(&[("a", "b", f64::MAX), ("b", "c", f64::MAX)]);
        let err = sp(huge, "a", "c").unwrap_err();
        assert!(err.message.contains("overflow"), "{}", err.message);
    }

    #[test]
    fn long_names_are_cut_in_messages() {
        let long = "n".repeat(10_000);
        let err = run("graph.toposort", &args(&[("edges", pairs(&[(&long, &long)]))])).unwrap_err();
        assert!(err.message.len() < 500, "{}", err.message.len());
    }
}
