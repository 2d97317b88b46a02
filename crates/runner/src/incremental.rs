//! An incremental (dynamic) topological order for a DAG that grows one node or one edge
//! at a time: the Pearce–Kelly algorithm ("A Dynamic Topological Sort Algorithm for
//! Directed Acyclic Graphs", D. J. Pearce and P. H. J. Kelly, ACM JEA 11, 2006).
//!
//! Every node has a position in a total order in which each edge `u -> v` has
//! `position(u) < position(v)`. Adding an edge that already agrees with the order costs
//! O(1) besides the duplicate check. An edge `x -> y` that disagrees (`position(y) <
//! position(x)`) only touches the *affected region* between the two positions: a DFS
//! forward from `y` that never leaves positions below `position(x)`, a DFS backward from
//! `x` that never leaves positions above `position(y)`, and then the positions those two
//! sets held are pooled and handed out again, backward set first. Nodes outside the
//! region keep their positions. If the forward DFS reaches `x`, the edge would close a
//! cycle: it is rejected, the graph and the order are left as they were, and the error
//! names the path.
//!
//! [`full_topological_order`] is the from-scratch alternative (Kahn's algorithm), kept for
//! comparison in tests and benchmarks.

use std::collections::VecDeque;
use std::fmt;

/// A cycle, as the nodes on it in edge order: `nodes[0] -> nodes[1] -> … -> nodes[k]`
/// are edges, and `nodes[k] -> nodes[0]` closes the cycle. A self-loop is `[n]`.
///
/// From [`IncrementalOrder::add_edge`]`(from, to)`, `nodes` is the existing path from
/// `to` to `from` (so `nodes[0] == to` and the last node is `from`); the rejected edge
/// `from -> to` is the one that would have closed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleError {
    pub nodes: Vec<usize>,
}

impl fmt::Display for CycleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cycle: ")?;
        for n in &self.nodes {
            write!(f, "{n} -> ")?;
        }
        match self.nodes.first() {
            Some(first) => write!(f, "{first}"),
            None => f.write_str("(empty)"),
        }
    }
}

impl std::error::Error for CycleError {}

/// Why an edge (or a whole edge list) was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderError {
    /// An edge names a node id that does not exist (`len` nodes exist: ids `0..len`).
    UnknownNode { node: usize, len: usize },
    /// The edge would close a cycle.
    Cycle(CycleError),
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OrderError::UnknownNode { node, len } => {
                write!(f, "unknown node {node} (the graph has {len} nodes)")
            }
            OrderError::Cycle(c) => c.fmt(f),
        }
    }
}

impl std::error::Error for OrderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OrderError::Cycle(c) => Some(c),
            OrderError::UnknownNode { .. } => None,
        }
    }
}

impl From<CycleError> for OrderError {
    fn from(c: CycleError) -> Self {
        OrderError::Cycle(c)
    }
}

/// A DAG and a topological order of it, kept up to date as nodes and edges are added.
#[derive(Debug, Clone, Default)]
pub struct IncrementalOrder {
    /// `ord[node]`: the node's position.
    ord: Vec<usize>,
    /// `node_at[pos]`: the node at a position (the inverse permutation of `ord`).
    node_at: Vec<usize>,
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    edges: usize,
    // Scratch space reused across `add_edge` calls; every entry of `visited` is false
    // between calls.
    visited: Vec<bool>,
    delta_f: Vec<usize>,
    delta_b: Vec<usize>,
    /// DFS stack: (node, index of the next edge to follow).
    stack: Vec<(usize, usize)>,
    pool: Vec<usize>,
}

impl IncrementalOrder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty graph with room for `nodes` nodes.
    pub fn with_capacity(nodes: usize) -> Self {
        Self {
            ord: Vec::with_capacity(nodes),
            node_at: Vec::with_capacity(nodes),
            succ: Vec::with_capacity(nodes),
            pred: Vec::with_capacity(nodes),
            visited: Vec::with_capacity(nodes),
            ..Self::default()
        }
    }

    /// Makes room for `additional` more nodes (a clone keeps no spare capacity).
    pub fn reserve(&mut self, additional: usize) {
        self.ord.reserve(additional);
        self.node_at.reserve(additional);
        self.succ.reserve(additional);
        self.pred.reserve(additional);
        self.visited.reserve(additional);
    }

    /// Adds a node with no edges, placed last in the order; returns its id (ids are
    /// `0, 1, 2, …` in the order of creation).
    pub fn add_node(&mut self) -> usize {
        let id = self.ord.len();
        self.ord.push(id);
        self.node_at.push(id);
        self.succ.push(Vec::new());
        self.pred.push(Vec::new());
        self.visited.push(false);
        id
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ord.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.ord.is_empty()
    }

    /// Number of distinct edges accepted so far.
    pub fn edge_count(&self) -> usize {
        self.edges
    }

    /// The nodes in topological order: every edge's source comes before its target.
    pub fn order(&self) -> impl ExactSizeIterator<Item = usize> + '_ {
        self.node_at.iter().copied()
    }

    /// The nodes in topological order, as a slice indexed by position.
    pub fn as_slice(&self) -> &[usize] {
        &self.node_at
    }

    /// The node's position in the order, or `None` for an unknown id.
    pub fn position(&self, node: usize) -> Option<usize> {
        self.ord.get(node).copied()
    }

    /// The node at a position, or `None` past the end.
    pub fn node_at(&self, position: usize) -> Option<usize> {
        self.node_at.get(position).copied()
    }

    /// The node's direct successors (empty for an unknown id).
    pub fn successors(&self, node: usize) -> &[usize] {
        self.succ.get(node).map_or(&[], Vec::as_slice)
    }

    /// The node's direct predecessors (empty for an unknown id).
    pub fn predecessors(&self, node: usize) -> &[usize] {
        self.pred.get(node).map_or(&[], Vec::as_slice)
    }

    /// True if the edge `from -> to` was accepted (false for unknown ids).
    pub fn contains_edge(&self, from: usize, to: usize) -> bool {
        if from >= self.len() || to >= self.len() {
            return false;
        }
        // Scan the shorter of the two adjacency lists.
        if self.succ[from].len() <= self.pred[to].len() {
            self.succ[from].contains(&to)
        } else {
            self.pred[to].contains(&from)
        }
    }

    fn check(&self, node: usize) -> Result<(), OrderError> {
        if node < self.len() {
            Ok(())
        } else {
            Err(OrderError::UnknownNode {
                node,
                len: self.len(),
            })
        }
    }

    /// Adds the edge `from -> to` (`from` must come before `to`) and restores a
    /// topological order by moving only nodes whose positions lie between
    /// `position(to)` and `position(from)`.
    ///
    /// A duplicate edge is accepted and changes nothing. An edge that would close a cycle
    /// (a self-loop included) is refused with [`OrderError::Cycle`], and an unknown id
    /// with [`OrderError::UnknownNode`]; either way the graph and the order are left
    /// unchanged.
    pub fn add_edge(&mut self, from: usize, to: usize) -> Result<(), OrderError> {
        self.check(from)?;
        self.check(to)?;
        if from == to {
            return Err(CycleError { nodes: vec![from] }.into());
        }
        if self.contains_edge(from, to) {
            return Ok(());
        }
        let lb = self.ord[to];
        let ub = self.ord[from];
        if lb < ub {
            // `to` is currently before `from`: the affected region is [lb, ub].
            if let Err(cycle) = self.dfs_forward(to, ub) {
                for &n in &self.delta_f {
                    self.visited[n] = false;
                }
                self.delta_f.clear();
                return Err(cycle.into());
            }
            self.dfs_backward(from, lb);
            self.reorder();
        }
        self.succ[from].push(to);
        self.pred[to].push(from);
        self.edges += 1;
        Ok(())
    }

    /// Collects into `delta_f` the nodes reachable from `start` whose positions are below
    /// `ub`, marking them visited. Reaching the node at `ub` means a cycle; the returned
    /// error holds the path from `start` to it.
    fn dfs_forward(&mut self, start: usize, ub: usize) -> Result<(), CycleError> {
        self.delta_f.clear();
        self.stack.clear();
        self.visited[start] = true;
        self.delta_f.push(start);
        self.stack.push((start, 0));
        while let Some(top) = self.stack.last_mut() {
            let (node, next) = *top;
            let Some(&w) = self.succ[node].get(next) else {
                self.stack.pop();
                continue;
            };
            top.1 += 1;
            let ow = self.ord[w];
            if ow == ub {
                // `w` is `from`: the stack is the path `to -> … -> node`, and node -> from.
                let mut nodes: Vec<usize> = self.stack.iter().map(|&(n, _)| n).collect();
                nodes.push(w);
                self.stack.clear();
                return Err(CycleError { nodes });
            }
            if ow < ub && !self.visited[w] {
                self.visited[w] = true;
                self.delta_f.push(w);
                self.stack.push((w, 0));
            }
        }
        Ok(())
    }

    /// Collects into `delta_b` the nodes that reach `start` and whose positions are above
    /// `lb`, marking them visited. Cannot meet `delta_f`: a node in both would make a
    /// cycle, which `dfs_forward` has already ruled out.
    fn dfs_backward(&mut self, start: usize, lb: usize) {
        self.delta_b.clear();
        self.stack.clear();
        self.visited[start] = true;
        self.delta_b.push(start);
        self.stack.push((start, 0));
        while let Some(top) = self.stack.last_mut() {
            let (node, next) = *top;
            let Some(&w) = self.pred[node].get(next) else {
                self.stack.pop();
                continue;
            };
            top.1 += 1;
            if self.ord[w] > lb && !self.visited[w] {
                self.visited[w] = true;
                self.delta_b.push(w);
                self.stack.push((w, 0));
            }
        }
    }

    /// Gives the positions held by `delta_b` and `delta_f` back out: `delta_b` first
    /// (keeping its members' relative order), then `delta_f` (likewise).
    fn reorder(&mut self) {
        let ord = &self.ord;
        self.delta_b.sort_unstable_by_key(|&n| ord[n]);
        self.delta_f.sort_unstable_by_key(|&n| ord[n]);

        // The pooled positions, ascending: a merge of the two sorted position lists.
        self.pool.clear();
        let (mut i, mut j) = (0, 0);
        while i < self.delta_b.len() || j < self.delta_f.len() {
            let take_b = j == self.delta_f.len()
                || (i < self.delta_b.len() && ord[self.delta_b[i]] < ord[self.delta_f[j]]);
            if take_b {
                self.pool.push(ord[self.delta_b[i]]);
                i += 1;
            } else {
                self.pool.push(ord[self.delta_f[j]]);
                j += 1;
            }
        }

        for (&node, &pos) in self
            .delta_b
            .iter()
            .chain(self.delta_f.iter())
            .zip(self.pool.iter())
        {
            self.ord[node] = pos;
            self.node_at[pos] = node;
            self.visited[node] = false;
        }
        self.delta_b.clear();
        self.delta_f.clear();
    }
}

/// A topological order of the graph with nodes `0..n` and `edges` (`(from, to)`: `from`
/// first), computed from scratch with Kahn's algorithm (a FIFO queue seeded with the
/// sources in id order, so the result is deterministic).
/// Duplicate edges are allowed; a self-loop or any other cycle is an error naming one
/// cycle, and an id `>= n` is [`OrderError::UnknownNode`].
pub fn full_topological_order(n: usize, edges: &[(usize, usize)]) -> Result<Vec<usize>, OrderError> {
    // Successors in compressed (CSR) form: `targets[start[u]..start[u + 1]]`.
    let mut start = vec![0usize; n + 1];
    for &(u, v) in edges {
        for node in [u, v] {
            if node >= n {
                return Err(OrderError::UnknownNode { node, len: n });
            }
        }
        start[u + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut targets = vec![0usize; edges.len()];
    let mut indeg = vec![0usize; n];
    for &(u, v) in edges {
        targets[fill[u]] = v;
        fill[u] += 1;
        indeg[v] += 1;
    }

    let mut order = Vec::with_capacity(n);
    let mut queue: VecDeque<usize> = (0..n).filter(|&v| indeg[v] == 0).collect();
    while let Some(u) = queue.pop_front() {
        order.push(u);
        for &v in &targets[start[u]..start[u + 1]] {
            indeg[v] -= 1;
            if indeg[v] == 0 {
                queue.push_back(v);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }

    // Every node left has a predecessor that is also left: walk predecessors until one
    // repeats, which is a cycle (walked backwards).
    let mut pred_of = vec![usize::MAX; n];
    for &(u, v) in edges {
        if indeg[u] > 0 && indeg[v] > 0 {
            pred_of[v] = u;
        }
    }
    let first = (0..n).find(|&v| indeg[v] > 0).expect("a node is left");
    let mut seen_at = vec![usize::MAX; n];
    let mut walk = Vec::new();
    let mut v = first;
    while seen_at[v] == usize::MAX {
        seen_at[v] = walk.len();
        walk.push(v);
        v = pred_of[v];
    }
    let mut nodes = walk.split_off(seen_at[v]);
    nodes.reverse();
    Err(CycleError { nodes }.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks that the order is a permutation of all nodes, `ord` and `node_at` are
    /// inverse, and every edge goes forward.
    fn assert_valid(g: &IncrementalOrder) {
        let n = g.len();
        let mut seen = vec![false; n];
        for (pos, node) in g.order().enumerate() {
            assert!(node < n, "node {node} out of range");
            assert!(!seen[node], "node {node} twice in the order");
            seen[node] = true;
            assert_eq!(g.position(node), Some(pos));
        }
        assert!(seen.iter().all(|&s| s), "a node is missing from the order");
        for u in 0..n {
            for &v in g.successors(u) {
                assert!(
                    g.position(u) < g.position(v),
                    "edge {u} -> {v} goes backwards"
                );
                assert!(g.predecessors(v).contains(&u));
            }
        }
        assert!(g.visited.iter().all(|&v| !v), "scratch marks left set");
    }

    fn graph(n: usize) -> IncrementalOrder {
        let mut g = IncrementalOrder::new();
        for i in 0..n {
            assert_eq!(g.add_node(), i);
        }
        g
    }

    fn order(g: &IncrementalOrder) -> Vec<usize> {
        g.order().collect()
    }

    #[test]
    fn empty_and_new_nodes_go_last() {
        let mut g = IncrementalOrder::new();
        assert!(g.is_empty());
        g.reserve(8);
        assert_eq!(order(&g), Vec::<usize>::new());
        let a = g.add_node();
        let b = g.add_node();
        assert_eq!((a, b), (0, 1));
        assert_eq!(g.len(), 2);
        assert_eq!(order(&g), vec![0, 1]);
        assert_eq!(g.position(1), Some(1));
        assert_eq!(g.node_at(0), Some(0));
        assert_eq!(g.node_at(2), None);
    }

    #[test]
    fn chain_in_creation_order_needs_no_reorder() {
        let mut g = graph(5);
        for i in 0..4 {
            g.add_edge(i, i + 1).unwrap();
        }
        assert_eq!(order(&g), vec![0, 1, 2, 3, 4]);
        assert_eq!(g.edge_count(), 4);
        assert_valid(&g);
    }

    #[test]
    fn reverse_chain_is_reordered() {
        // 4 -> 3 -> 2 -> 1 -> 0, added from the end: every edge goes against the order.
        let mut g = graph(5);
        for i in (0..4).rev() {
            g.add_edge(i + 1, i).unwrap();
            assert_valid(&g);
        }
        assert_eq!(order(&g), vec![4, 3, 2, 1, 0]);
    }

    #[test]
    fn diamond() {
        // 0 -> {1, 2} -> 3, edges added sink side first.
        let mut g = graph(4);
        g.add_edge(1, 3).unwrap();
        g.add_edge(2, 3).unwrap();
        g.add_edge(0, 1).unwrap();
        g.add_edge(0, 2).unwrap();
        assert_valid(&g);
        // 3 -> 0 would close a cycle through one of the middle nodes.
        let before = order(&g);
        let err = g.add_edge(3, 0).unwrap_err();
        match err {
            OrderError::Cycle(c) => {
                assert_eq!(c.nodes.first(), Some(&0));
                assert_eq!(c.nodes.last(), Some(&3));
                assert_eq!(c.nodes.len(), 3); // 0 -> 1|2 -> 3
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
        assert_eq!(order(&g), before);
        assert_eq!(g.edge_count(), 4);
        assert_valid(&g);
    }

    #[test]
    fn diamond_built_against_the_order() {
        // Sink created first, source last.
        let mut g = graph(4); // 0 = sink, 1 and 2 = middle, 3 = source
        g.add_edge(3, 1).unwrap();
        g.add_edge(3, 2).unwrap();
        g.add_edge(1, 0).unwrap();
        g.add_edge(2, 0).unwrap();
        assert_valid(&g);
        assert_eq!(g.order().next(), Some(3));
        assert_eq!(g.order().last(), Some(0));
    }

    #[test]
    fn only_the_affected_region_moves() {
        // Positions 0..8; edge 6 -> 2 affects positions 2..=6 only.
        let mut g = graph(8);
        g.add_edge(2, 3).unwrap();
        g.add_edge(5, 6).unwrap();
        g.add_edge(0, 7).unwrap();
        let before = order(&g);
        g.add_edge(6, 2).unwrap();
        assert_valid(&g);
        let after = order(&g);
        assert_eq!(after[..2], before[..2]);
        assert_eq!(after[7..], before[7..]);
        // The backward set {5, 6} takes the first pooled positions, then {2, 3};
        // unaffected 4 keeps its place.
        assert_eq!(after, vec![0, 1, 5, 6, 4, 2, 3, 7]);
    }

    #[test]
    fn edge_forcing_a_reorder_keeps_everything_consistent() {
        // Two chains 0 -> 1 -> 2 and 3 -> 4 -> 5, then 5 -> 0 puts the second before the first.
        let mut g = graph(6);
        g.add_edge(0, 1).unwrap();
        g.add_edge(1, 2).unwrap();
        g.add_edge(3, 4).unwrap();
        g.add_edge(4, 5).unwrap();
        g.add_edge(5, 0).unwrap();
        assert_valid(&g);
        assert_eq!(order(&g), vec![3, 4, 5, 0, 1, 2]);
        // And closing the loop is refused, naming the path 0 -> 1 -> 2 -> 3 -> 4 -> 5.
        let err = g.add_edge(2, 3).unwrap_err();
        assert_eq!(
            err,
            OrderError::Cycle(CycleError {
                nodes: vec![3, 4, 5, 0, 1, 2]
            })
        );
        assert_eq!(
            err.to_string(),
            "cycle: 3 -> 4 -> 5 -> 0 -> 1 -> 2 -> 3"
        );
    }

    #[test]
    fn cycle_rejection_leaves_graph_and_order_unchanged() {
        let mut g = graph(4);
        g.add_edge(0, 1).unwrap();
        g.add_edge(1, 2).unwrap();
        g.add_edge(2, 3).unwrap();
        let before = order(&g);
        let succ_before = g.succ.clone();
        let pred_before = g.pred.clone();
        let err = g.add_edge(3, 0).unwrap_err();
        assert_eq!(
            err,
            OrderError::Cycle(CycleError {
                nodes: vec![0, 1, 2, 3]
            })
        );
        assert_eq!(order(&g), before);
        assert_eq!(g.succ, succ_before);
        assert_eq!(g.pred, pred_before);
        assert_eq!(g.edge_count(), 3);
        assert_valid(&g);
        // The graph is still usable afterwards.
        let e = g.add_node();
        g.add_edge(e, 0).unwrap();
        assert_valid(&g);
    }

    #[test]
    fn self_loop_is_a_cycle() {
        let mut g = graph(2);
        assert_eq!(
            g.add_edge(1, 1),
            Err(OrderError::Cycle(CycleError { nodes: vec![1] }))
        );
        assert_eq!(g.edge_count(), 0);
        assert!(g.successors(1).is_empty());
        assert_eq!(
            g.add_edge(1, 1).unwrap_err().to_string(),
            "cycle: 1 -> 1"
        );
    }

    #[test]
    fn duplicate_edge_is_a_no_op() {
        let mut g = graph(3);
        g.add_edge(2, 0).unwrap();
        let before = order(&g);
        g.add_edge(2, 0).unwrap();
        assert_eq!(order(&g), before);
        assert_eq!(g.edge_count(), 1);
        assert_eq!(g.successors(2), &[0]);
        assert_eq!(g.predecessors(0), &[2]);
        assert!(g.contains_edge(2, 0));
        assert!(!g.contains_edge(0, 2));
        assert_valid(&g);
    }

    #[test]
    fn out_of_range_ids_are_errors() {
        let mut g = graph(2);
        assert_eq!(
            g.add_edge(0, 2),
            Err(OrderError::UnknownNode { node: 2, len: 2 })
        );
        assert_eq!(
            g.add_edge(usize::MAX, 0),
            Err(OrderError::UnknownNode {
                node: usize::MAX,
                len: 2
            })
        );
        assert_eq!(
            IncrementalOrder::new().add_edge(0, 0),
            Err(OrderError::UnknownNode { node: 0, len: 0 })
        );
        assert_eq!(g.position(2), None);
        assert!(g.successors(7).is_empty());
        assert!(g.predecessors(7).is_empty());
        assert!(!g.contains_edge(0, 9));
        assert_eq!(g.edge_count(), 0);
        assert_eq!(
            full_topological_order(2, &[(0, 5)]),
            Err(OrderError::UnknownNode { node: 5, len: 2 })
        );
    }

    #[test]
    fn deep_dfs_does_not_overflow_the_stack() {
        // A chain 0 -> 1 -> … -> n-2 in creation order, then the last node n-1 put in
        // front of it: one forward DFS down the whole chain (it is iterative).
        let n = 200_000;
        let mut g = graph(n);
        for i in 0..n - 2 {
            g.add_edge(i, i + 1).unwrap();
        }
        g.add_edge(n - 1, 0).unwrap();
        assert_eq!(g.order().next(), Some(n - 1));
        assert!(g.order().skip(1).eq(0..n - 1));
        // Closing the loop needs another DFS over the whole chain, and names all of it.
        match g.add_edge(n - 2, n - 1) {
            Err(OrderError::Cycle(c)) => {
                assert_eq!(c.nodes.len(), n);
                assert_eq!(c.nodes[0], n - 1);
                assert_eq!(c.nodes[n - 1], n - 2);
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
        assert_eq!(g.edge_count(), n - 1);
        assert_eq!(g.order().next(), Some(n - 1));
    }

    #[test]
    fn full_order_basics() {
        assert_eq!(full_topological_order(0, &[]), Ok(vec![]));
        assert_eq!(full_topological_order(3, &[]), Ok(vec![0, 1, 2]));
        assert_eq!(
            full_topological_order(4, &[(3, 1), (3, 2), (1, 0), (2, 0), (3, 1)]),
            // 1 is released by the duplicate edge, after 2.
            Ok(vec![3, 2, 1, 0])
        );
        assert_eq!(
            full_topological_order(2, &[(1, 1)]),
            Err(OrderError::Cycle(CycleError { nodes: vec![1] }))
        );
        match full_topological_order(5, &[(0, 1), (1, 2), (2, 3), (3, 1), (3, 4)]) {
            Err(OrderError::Cycle(c)) => {
                let mut nodes = c.nodes.clone();
                nodes.sort_unstable();
                assert_eq!(nodes, vec![1, 2, 3]);
                // Consecutive nodes (and last -> first) are edges.
                let edges = [(0, 1), (1, 2), (2, 3), (3, 1), (3, 4)];
                for k in 0..c.nodes.len() {
                    let e = (c.nodes[k], c.nodes[(k + 1) % c.nodes.len()]);
                    assert!(edges.contains(&e), "{e:?} is not an edge");
                }
            }
            other => panic!("expected a cycle, got {other:?}"),
        }
    }

    /// Is there a path `from ⇝ to` (length 0 included) over `adj`?
    fn reaches(adj: &[Vec<usize>], from: usize, to: usize) -> bool {
        let mut seen = vec![false; adj.len()];
        let mut stack = vec![from];
        seen[from] = true;
        while let Some(u) = stack.pop() {
            if u == to {
                return true;
            }
            for &v in &adj[u] {
                if !seen[v] {
                    seen[v] = true;
                    stack.push(v);
                }
            }
        }
        false
    }

    #[derive(Debug, Clone)]
    enum Op {
        AddNode,
        /// Raw ids, reduced modulo the node count plus a little, so some are out of range.
        AddEdge(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::AddNode),
            6 => (0usize..1000, 0usize..1000).prop_map(|(a, b)| Op::AddEdge(a, b)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_dags_stay_topologically_ordered(
            initial in 0usize..12,
            ops in proptest::collection::vec(op(), 0..150),
        ) {
            let mut g = graph(initial);
            // The reference: the accepted edges, as adjacency lists and as a list.
            let mut adj: Vec<Vec<usize>> = vec![Vec::new(); initial];
            let mut accepted: Vec<(usize, usize)> = Vec::new();
            for op in ops {
                match op {
                    Op::AddNode => {
                        let id = g.add_node();
                        prop_assert_eq!(id, adj.len());
                        prop_assert_eq!(g.position(id), Some(id));
                        adj.push(Vec::new());
                    }
                    Op::AddEdge(a, b) => {
                        let n = adj.len();
                        // Mostly in range; one in ~8 picks may be past the end.
                        let span = n + n / 8 + 1;
                        let (from, to) = (a % span, b % span);
                        let before = order(&g);
                        let result = g.add_edge(from, to);
                        if from >= n || to >= n {
                            let bad = if from >= n { from } else { to };
                            prop_assert_eq!(result, Err(OrderError::UnknownNode { node: bad, len: n }));
                            prop_assert_eq!(order(&g), before);
                            continue;
                        }
                        let closes_cycle = reaches(&adj, to, from);
                        match result {
                            Ok(()) => {
                                prop_assert!(!closes_cycle, "{} -> {} accepted but closes a cycle", from, to);
                                if !adj[from].contains(&to) {
                                    adj[from].push(to);
                                    accepted.push((from, to));
                                }
                                // Nodes outside the affected region keep their positions.
                                let (lo, hi) = {
                                    let pf = before.iter().position(|&x| x == from).unwrap();
                                    let pt = before.iter().position(|&x| x == to).unwrap();
                                    (pf.min(pt), pf.max(pt))
                                };
                                let after = order(&g);
                                prop_assert_eq!(&after[..lo], &before[..lo]);
                                prop_assert_eq!(&after[hi + 1..], &before[hi + 1..]);
                            }
                            Err(OrderError::Cycle(c)) => {
                                prop_assert!(closes_cycle, "{} -> {} refused but closes no cycle", from, to);
                                prop_assert_eq!(order(&g), before);
                                // The named path is `to ⇝ from` over accepted edges.
                                prop_assert_eq!(c.nodes.first(), Some(&to));
                                prop_assert_eq!(c.nodes.last(), Some(&from));
                                for w in c.nodes.windows(2) {
                                    prop_assert!(adj[w[0]].contains(&w[1]), "{:?} is not an edge", w);
                                }
                                // And the full re-sort agrees that adding it is a cycle.
                                let mut with = accepted.clone();
                                with.push((from, to));
                                let full_cycle = matches!(
                                    full_topological_order(n, &with),
                                    Err(OrderError::Cycle(_))
                                );
                                prop_assert!(full_cycle);
                            }
                            Err(e) => {
                                return Err(TestCaseError::fail(format!("unexpected error {e:?}")));
                            }
                        }
                        prop_assert_eq!(g.edge_count(), accepted.len());
                    }
                }
                // After every step: a permutation of all nodes in which every accepted
                // edge goes forward.
                let n = adj.len();
                prop_assert_eq!(g.len(), n);
                let mut pos = vec![usize::MAX; n];
                for (p, node) in g.order().enumerate() {
                    prop_assert!(node < n);
                    prop_assert_eq!(pos[node], usize::MAX, "node {} twice", node);
                    pos[node] = p;
                    prop_assert_eq!(g.position(node), Some(p));
                }
                for &(u, v) in &accepted {
                    prop_assert!(pos[u] < pos[v], "edge {} -> {} goes backwards", u, v);
                }
                // The from-scratch sort accepts the same edge set.
                let full = full_topological_order(n, &accepted);
                prop_assert!(full.is_ok());
                let full = full.unwrap();
                let mut fpos = vec![0; n];
                for (p, &node) in full.iter().enumerate() {
                    fpos[node] = p;
                }
                for &(u, v) in &accepted {
                    prop_assert!(fpos[u] < fpos[v]);
                }
            }
            assert_valid(&g);
        }
    }
}
