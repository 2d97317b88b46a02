//! Sarkar's combinatorial embedding of a tree (or of a graph, through its breadth-first
//! spanning tree) into the Poincaré ball, with the precision to keep deep nodes apart.
//!
//! # The construction
//!
//! The root sits at the origin. Every node `w` has a frame: the isometry that maps the
//! origin to `w`. A child of `w` sits at hyperbolic distance τ from `w` in a direction of
//! `w`'s frame, and the child's frame is `w`'s frame followed by the pure translation
//! (Möbius addition) that carries the origin there; so in the child's frame the parent
//! lies at distance τ in the opposite direction. At each node the directions to its
//! children and to its parent are spread as far apart as possible: evenly around the
//! circle in the disk (Sarkar), a cross-polytope or a repulsion-optimised spherical code
//! in higher dimensions. If β is the smallest angle between two directions at any node,
//! τ = ((1 + ε)/ε)·ln(4/β) gives worst-case distortion about 1 + ε (in the disk
//! β = 2π/deg_max and this is Sala et al.'s ln(2·deg_max/π)).
//!
//! # Why not plain coordinates
//!
//! A node at depth k is ≈ k·τ from the origin, and an f64 Poincaré point cannot be more
//! than ≈ 37/√c from the origin (its norm rounds to the radius): with τ ≈ 28 (degree 20,
//! ε = 0.1) even depth 2 is out of reach, and the deep nodes of a 100k-node tree would
//! collapse onto the boundary. So [`TreeEmbedding`] keeps the construction itself — each
//! node's direction in its parent's frame, all well-conditioned unit vectors — and
//! measures distances exactly from it: positions are composed edge by edge in polar form
//! (distance from a frame's origin in log-domain, plus a unit direction), by the
//! hyperbolic laws of cosines written without cancellation. A distance of 10 000 between
//! two leaves 300 levels deep comes out to ~1e-12 relative. Global f64 coordinates are
//! still available ([`TreeEmbedding::poincare_points`]) and are exact as far as f64 can
//! place a point; deeper nodes are pulled onto the boundary margin and counted.
//!
//! Distances are measured in the ball of curvature −c; internally everything is in
//! curvature −1 units (a distance d at curvature −c is √c·d at curvature −1).

use std::collections::{HashMap, VecDeque};
use std::f64::consts::{LN_2, PI};

use crate::poincare::BOUNDARY_MARGIN;

/// How to embed.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbedOptions {
    /// Dimension of the ball (2 = Sarkar's disk).
    pub dim: usize,
    /// Curvature magnitude: the ball has curvature −c.
    pub c: f64,
    /// The node placed at the origin.
    pub root: usize,
    /// Hyperbolic length of every edge; `None` derives it from `epsilon`.
    pub tau: Option<f64>,
    /// Target distortion 1 + ε, used when `tau` is `None`.
    pub epsilon: f64,
    /// Seed for the spherical codes of dimensions ≥ 3 (the result is deterministic).
    pub seed: u64,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions { dim: 2, c: 1.0, root: 0, tau: None, epsilon: 0.1, seed: 0x5eed }
    }
}

/// What was wrong with the graph or the options.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// Nothing to embed.
    #[error("the graph has no nodes")]
    Empty,
    /// An edge names a node outside `0..n`.
    #[error("edge {index} ({u}, {v}) names node {node}, but nodes are numbered 0..{n}")]
    NodeOutOfRange {
        /// Position of the edge in the list.
        index: usize,
        /// The edge's ends.
        u: u64,
        /// The edge's ends.
        v: u64,
        /// The offending node.
        node: u64,
        /// Number of nodes.
        n: usize,
    },
    /// An edge from a node to itself.
    #[error("edge {index} is a self-loop on node {node}")]
    SelfLoop {
        /// Position of the edge in the list.
        index: usize,
        /// The node.
        node: u64,
    },
    /// Some nodes cannot be reached from the root.
    #[error(
        "{unreachable} of {n} nodes are not connected to the root {root} (node {example} is one); \
         embed each connected component on its own"
    )]
    Disconnected {
        /// How many nodes cannot be reached.
        unreachable: usize,
        /// Number of nodes.
        n: usize,
        /// The root.
        root: usize,
        /// One unreachable node.
        example: usize,
    },
    /// An option out of range.
    #[error("invalid embedding option `{name}`: {reason}")]
    InvalidOption {
        /// The option.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A query names a node the embedding does not have.
    #[error("node {node} does not exist: the embedding has {n} nodes")]
    NoSuchNode {
        /// The node asked for.
        node: usize,
        /// Number of nodes.
        n: usize,
    },
}

/// A tree embedded by Sarkar's construction (see the module documentation).
#[derive(Clone, Debug)]
pub struct TreeEmbedding {
    dim: usize,
    c: f64,
    /// Edge length in curvature −1 units (τ·√c).
    edge: f64,
    root: usize,
    /// `parent[root] == root`.
    parent: Vec<u32>,
    depth: Vec<u32>,
    /// Children of node `w`: `children[child_start[w]..child_start[w + 1]]`.
    child_start: Vec<usize>,
    children: Vec<u32>,
    /// Row `w`: the unit direction of `w` in its parent's frame (zeros for the root).
    direction: Vec<f64>,
    min_angle: f64,
    non_tree_edges: usize,
}

/// Global Poincaré coordinates of every node.
#[derive(Clone, Debug, PartialEq)]
pub struct PoincarePoints {
    /// Row-major n × dim.
    pub coordinates: Vec<f64>,
    /// Nodes too far from the origin for f64 (pulled onto the boundary margin, so they
    /// no longer measure right: use [`TreeEmbedding::distance`] for them).
    pub clamped: usize,
    /// The largest hyperbolic distance of a node from the origin.
    pub max_radius: f64,
}

/// How faithful the embedding is, measured on the hyperbolic distances it really has.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingQuality {
    /// Source nodes measured against every other node.
    pub sources: usize,
    /// Node pairs measured.
    pub pairs: usize,
    /// `sources == n`: every pair was measured.
    pub exact: bool,
    /// Mean over pairs of `|d_H/(τ·d_T) − 1|`.
    pub average_distortion: f64,
    /// `max(d_H/(τ·d_T)) / min(d_H/(τ·d_T))` over the pairs (1 = isometric up to scale).
    pub worst_distortion: f64,
    /// Mean over the sources of the average precision of ranking all nodes by embedded
    /// distance and finding the source's tree neighbours first (1 = perfect).
    pub mean_average_precision: f64,
}

/// Embed the graph with nodes `0..n` and undirected `edges` by Sarkar's construction.
/// Edges that are not in the breadth-first spanning tree from the root (cycles, the extra
/// parents of a DAG, duplicates) are ignored and counted in
/// [`TreeEmbedding::non_tree_edges`].
pub fn embed_tree(n: usize, edges: &[(u64, u64)], options: &EmbedOptions) -> Result<TreeEmbedding, EmbedError> {
    check_options(n, options)?;
    let adjacency = Adjacency::new(n, edges)?;
    let (parent, depth, order) = breadth_first(&adjacency, options.root)?;

    let mut child_count = vec![0usize; n];
    for w in 0..n {
        if w != options.root {
            child_count[parent[w] as usize] += 1;
        }
    }
    let mut child_start = vec![0usize; n + 1];
    for w in 0..n {
        child_start[w + 1] = child_start[w] + child_count[w];
    }
    // Children in breadth-first order, so that the layout does not depend on edge order
    // beyond what the traversal already fixes.
    let mut fill = child_start.clone();
    let mut children = vec![0u32; n.saturating_sub(1)];
    for &w in order.iter().skip(1) {
        let p = parent[w as usize] as usize;
        children[fill[p]] = w;
        fill[p] += 1;
    }

    let dim = options.dim;
    let mut codes = SphericalCodes::new(dim, options.seed);
    let mut direction = vec![0.0; n * dim];
    let mut min_angle = PI;
    let mut back = vec![0.0; dim];
    for &w in &order {
        let w = w as usize;
        let kids = &children[child_start[w]..child_start[w + 1]];
        if kids.is_empty() {
            continue;
        }
        if w == options.root {
            let (code, angle) = codes.get(kids.len());
            min_angle = min_angle.min(angle);
            for (i, &k) in kids.iter().enumerate() {
                direction[k as usize * dim..][..dim].copy_from_slice(&code[i * dim..][..dim]);
            }
        } else {
            // Slot 0 of the code points back to the parent; the children take the rest.
            let (code, angle) = codes.get(kids.len() + 1);
            min_angle = min_angle.min(angle);
            for (b, d) in back.iter_mut().zip(&direction[w * dim..][..dim]) {
                *b = -d;
            }
            let code = code.to_vec();
            let reflect = Householder::mapping(&code[..dim], &back);
            for (i, &k) in kids.iter().enumerate() {
                let row = &mut direction[k as usize * dim..][..dim];
                row.copy_from_slice(&code[(i + 1) * dim..][..dim]);
                reflect.apply(row);
            }
        }
    }

    let sqrt_c = options.c.sqrt();
    let edge = match options.tau {
        Some(tau) => tau * sqrt_c,
        None => (1.0 + options.epsilon) / options.epsilon * (4.0 / min_angle).ln(),
    };
    Ok(TreeEmbedding {
        dim,
        c: options.c,
        edge,
        root: options.root,
        parent,
        depth,
        child_start,
        children,
        direction,
        min_angle,
        non_tree_edges: edges.len() - (n - 1),
    })
}

fn check_options(n: usize, options: &EmbedOptions) -> Result<(), EmbedError> {
    let invalid = |name, reason: String| Err(EmbedError::InvalidOption { name, reason });
    if n == 0 {
        return Err(EmbedError::Empty);
    }
    if n > u32::MAX as usize {
        return invalid("n", format!("at most {} nodes, got {n}", u32::MAX));
    }
    if options.dim < 2 {
        return invalid("dim", format!("the ball needs dimension >= 2, got {}", options.dim));
    }
    if !(options.c.is_finite() && options.c > 0.0) {
        return invalid("c", format!("curvature magnitude must be finite and > 0, got {}", options.c));
    }
    if options.root >= n {
        return invalid("root", format!("node {} does not exist (nodes are 0..{n})", options.root));
    }
    if let Some(tau) = options.tau {
        if !(tau.is_finite() && tau > 0.0) {
            return invalid("tau", format!("edge length must be finite and > 0, got {tau}"));
        }
    } else if !(options.epsilon.is_finite() && options.epsilon > 0.0) {
        return invalid("epsilon", format!("target distortion 1 + epsilon needs epsilon > 0, got {}", options.epsilon));
    }
    Ok(())
}

impl TreeEmbedding {
    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Never true: an embedding has at least its root.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// Dimension of the ball.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Curvature magnitude c.
    pub fn c(&self) -> f64 {
        self.c
    }

    /// Hyperbolic length of every edge (in the ball of curvature −c).
    pub fn tau(&self) -> f64 {
        self.edge / self.c.sqrt()
    }

    /// The node at the origin.
    pub fn root(&self) -> usize {
        self.root
    }

    /// The parent in the spanning tree (`None` for the root).
    pub fn parent(&self, node: usize) -> Option<usize> {
        let p = *self.parent.get(node)? as usize;
        (node != self.root).then_some(p)
    }

    /// Edges from the root to `node`.
    pub fn depth(&self, node: usize) -> Option<usize> {
        self.depth.get(node).map(|&d| d as usize)
    }

    /// The deepest node's depth.
    pub fn max_depth(&self) -> usize {
        self.depth.iter().copied().max().unwrap_or(0) as usize
    }

    /// The smallest angle between two edge directions at any node (what τ was derived from).
    pub fn min_angle(&self) -> f64 {
        self.min_angle
    }

    /// Input edges left out of the spanning tree.
    pub fn non_tree_edges(&self) -> usize {
        self.non_tree_edges
    }

    /// The unit direction of `node` in its parent's frame (zeros for the root).
    pub fn direction(&self, node: usize) -> Option<&[f64]> {
        (node < self.len()).then(|| &self.direction[node * self.dim..][..self.dim])
    }

    /// The hyperbolic distance between two nodes' points, exact to ~1e-12 relative however
    /// deep they are: both are placed in the frame of their lowest common ancestor.
    pub fn distance(&self, u: usize, v: usize) -> Result<f64, EmbedError> {
        self.check_node(u)?;
        self.check_node(v)?;
        let (mut a, mut b) = (u, v);
        let mut pa = Polar::origin(self.dim);
        let mut pb = Polar::origin(self.dim);
        while self.depth[a] > self.depth[b] {
            pa = self.up(a, &pa);
            a = self.parent[a] as usize;
        }
        while self.depth[b] > self.depth[a] {
            pb = self.up(b, &pb);
            b = self.parent[b] as usize;
        }
        while a != b {
            pa = self.up(a, &pa);
            a = self.parent[a] as usize;
            pb = self.up(b, &pb);
            b = self.parent[b] as usize;
        }
        let spread: f64 = pa.direction.iter().zip(&pb.direction).map(|(x, y)| (x - y) * (x - y)).sum();
        Ok(distance_from_half_sinh_sq(ln_half_sinh_sq(pa.radius, pb.radius, spread)) / self.c.sqrt())
    }

    /// Distances from `source` to every node, in O(n): the tree is walked outwards from
    /// the source, carrying each node's position and frame as seen from the source.
    pub fn distances_from(&self, source: usize) -> Result<Vec<f64>, EmbedError> {
        self.check_node(source)?;
        let mut out = vec![0.0; self.len()];
        let sqrt_c = self.c.sqrt();
        self.walk_from(source, |node, _hops, polar| out[node] = polar.radius / sqrt_c);
        Ok(out)
    }

    /// Every node's coordinates in the Poincaré ball of curvature −c. Exact as far as f64
    /// can place a point; nodes beyond that are pulled onto the boundary margin and
    /// counted in `clamped`.
    pub fn poincare_points(&self) -> PoincarePoints {
        let dim = self.dim;
        let sqrt_c = self.c.sqrt();
        let mut coordinates = vec![0.0; self.len() * dim];
        let mut clamped = 0;
        let mut max_radius: f64 = 0.0;
        let limit = 1.0 - BOUNDARY_MARGIN;
        self.walk_from(self.root, |node, _hops, polar| {
            max_radius = max_radius.max(polar.radius / sqrt_c);
            let mut scale = (polar.radius / 2.0).tanh();
            if scale > limit {
                scale = limit;
                clamped += 1;
            }
            for (x, d) in coordinates[node * dim..][..dim].iter_mut().zip(&polar.direction) {
                *x = scale * d / sqrt_c;
            }
        });
        PoincarePoints { coordinates, clamped, max_radius }
    }

    /// Distortion and mean average precision, measured from `sources` nodes (all of them
    /// when `sources >= n`; otherwise distinct nodes drawn with `seed`) to every node.
    pub fn quality(&self, sources: usize, seed: u64) -> EmbeddingQuality {
        let n = self.len();
        let chosen: Vec<usize> = if sources >= n {
            (0..n).collect()
        } else {
            let mut rng = SplitMix64(seed);
            let mut picked = std::collections::HashSet::new();
            while picked.len() < sources {
                picked.insert((rng.next() % n as u64) as usize);
            }
            let mut chosen: Vec<usize> = picked.into_iter().collect();
            chosen.sort_unstable();
            chosen
        };
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(chosen.len().max(1));
        let partials: Vec<Tally> = std::thread::scope(|scope| {
            let handles: Vec<_> = chosen
                .chunks(chosen.len().div_ceil(threads).max(1))
                .map(|part| scope.spawn(move || part.iter().fold(Tally::default(), |t, &s| t.merge(self.tally(s)))))
                .collect();
            handles.into_iter().map(|h| h.join().expect("quality worker panicked")).collect()
        });
        let total = partials.into_iter().fold(Tally::default(), Tally::merge);
        EmbeddingQuality {
            sources: chosen.len(),
            pairs: total.pairs,
            exact: chosen.len() == n,
            average_distortion: if total.pairs == 0 { 0.0 } else { total.distortion_sum / total.pairs as f64 },
            worst_distortion: if total.pairs == 0 { 1.0 } else { total.max_ratio / total.min_ratio },
            mean_average_precision: if chosen.is_empty() { 1.0 } else { total.precision_sum / chosen.len() as f64 },
        }
    }

    fn tally(&self, source: usize) -> Tally {
        let n = self.len();
        let mut distance = vec![0.0; n];
        let mut hops = vec![0u32; n];
        self.walk_from(source, |node, h, polar| {
            distance[node] = polar.radius;
            hops[node] = h;
        });
        let mut tally = Tally::default();
        for node in 0..n {
            if node == source {
                continue;
            }
            let ratio = distance[node] / (self.edge * hops[node] as f64);
            tally.pairs += 1;
            tally.distortion_sum += (ratio - 1.0).abs();
            tally.min_ratio = tally.min_ratio.min(ratio);
            tally.max_ratio = tally.max_ratio.max(ratio);
        }
        // Average precision of finding the tree neighbours (hop 1) first.
        let mut neighbours: Vec<f64> = (0..n).filter(|&v| hops[v] == 1).map(|v| distance[v]).collect();
        if !neighbours.is_empty() {
            neighbours.sort_by(f64::total_cmp);
            let mut others: Vec<f64> = (0..n).filter(|&v| hops[v] > 1).map(|v| distance[v]).collect();
            others.sort_by(f64::total_cmp);
            let mut precision = 0.0;
            for (i, d) in neighbours.iter().enumerate() {
                let closer_others = others.partition_point(|o| o <= d);
                let found = neighbours.partition_point(|x| x <= d).max(i + 1);
                precision += found as f64 / (found + closer_others) as f64;
            }
            tally.precision_sum = precision / neighbours.len() as f64;
        } else {
            tally.precision_sum = 1.0;
        }
        tally
    }

    /// Visit every node with (node, hops from source, its position seen from the source).
    fn walk_from(&self, source: usize, mut visit: impl FnMut(usize, u32, &Polar)) {
        let dim = self.dim;
        let start = Frame { polar: Polar::origin(dim), rotation: identity(dim) };
        visit(source, 0, &start.polar);
        // (node, came from, hops, frame of node as seen from the source)
        let mut stack = vec![(source, usize::MAX, 0u32, start)];
        let mut step = vec![0.0; dim];
        while let Some((w, from, h, frame)) = stack.pop() {
            let mut neighbours = self.children[self.child_start[w]..self.child_start[w + 1]]
                .iter()
                .map(|&k| (k as usize, 1.0))
                .collect::<Vec<_>>();
            if w != self.root {
                neighbours.push((self.parent[w] as usize, -1.0));
            }
            for (x, sign) in neighbours {
                if x == from {
                    continue;
                }
                // Direction from w to x in w's frame: x's own direction for a child, the
                // reverse of w's for the parent.
                let local = if sign > 0.0 { &self.direction[x * dim..][..dim] } else { &self.direction[w * dim..][..dim] };
                rotate(&frame.rotation, local, sign, &mut step);
                let next = frame.advance(self.edge, &step);
                visit(x, h + 1, &next.polar);
                stack.push((x, w, h + 1, next));
            }
        }
    }

    /// The position `p` (in `node`'s frame) seen from the frame of `node`'s parent.
    fn up(&self, node: usize, p: &Polar) -> Polar {
        let a = &self.direction[node * self.dim..][..self.dim];
        compose(self.edge, a, p).0
    }

    fn check_node(&self, node: usize) -> Result<(), EmbedError> {
        if node < self.len() {
            Ok(())
        } else {
            Err(EmbedError::NoSuchNode { node, n: self.len() })
        }
    }
}

#[derive(Clone, Copy)]
struct Tally {
    pairs: usize,
    distortion_sum: f64,
    min_ratio: f64,
    max_ratio: f64,
    precision_sum: f64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally { pairs: 0, distortion_sum: 0.0, min_ratio: f64::INFINITY, max_ratio: 0.0, precision_sum: 0.0 }
    }
}

impl Tally {
    fn merge(self, o: Tally) -> Tally {
        Tally {
            pairs: self.pairs + o.pairs,
            distortion_sum: self.distortion_sum + o.distortion_sum,
            min_ratio: self.min_ratio.min(o.min_ratio),
            max_ratio: self.max_ratio.max(o.max_ratio),
            precision_sum: self.precision_sum + o.precision_sum,
        }
    }
}

/// A point as (hyperbolic distance from a frame's origin, unit direction), curvature −1.
#[derive(Clone, Debug)]
struct Polar {
    radius: f64,
    direction: Vec<f64>,
}

impl Polar {
    fn origin(dim: usize) -> Polar {
        let mut direction = vec![0.0; dim];
        direction[0] = 1.0;
        Polar { radius: 0.0, direction }
    }
}

/// A node's frame seen from the source: translation to `polar` after `rotation`
/// (row-major dim × dim), the rotation being the accumulated gyrations.
struct Frame {
    polar: Polar,
    rotation: Vec<f64>,
}

impl Frame {
    /// The frame one edge of length `edge` further, in direction `step` (source coordinates).
    fn advance(&self, edge: f64, step: &[f64]) -> Frame {
        let (polar, turn) = compose_polar(&self.polar, edge, step);
        let mut rotation = self.rotation.clone();
        if let Some(turn) = turn {
            turn.apply_to_columns(&mut rotation);
        }
        Frame { polar, rotation }
    }
}

/// translate(P) ∘ translate(Q) = translate(P ⊕ Q) ∘ gyr[P, Q]: advancing from `p` by a
/// step `(edge, step)` is composing two translations, which leaves the gyration.
fn compose_polar(p: &Polar, edge: f64, step: &[f64]) -> (Polar, Option<Turn>) {
    let inner = Polar { radius: edge, direction: step.to_vec() };
    compose(p.radius, &p.direction, &inner)
}

/// A rotation by `angle` in the plane of orthonormal `e1`, `e2` (from e1 towards e2).
struct Turn {
    e1: Vec<f64>,
    e2: Vec<f64>,
    angle: f64,
}

impl Turn {
    fn apply(&self, v: &mut [f64]) {
        let (s, c) = self.angle.sin_cos();
        let a: f64 = v.iter().zip(&self.e1).map(|(x, y)| x * y).sum();
        let b: f64 = v.iter().zip(&self.e2).map(|(x, y)| x * y).sum();
        let (na, nb) = (c * a - s * b, s * a + c * b);
        for ((x, e1), e2) in v.iter_mut().zip(&self.e1).zip(&self.e2) {
            *x += (na - a) * e1 + (nb - b) * e2;
        }
    }

    fn apply_to_columns(&self, m: &mut [f64]) {
        let dim = self.e1.len();
        let mut column = vec![0.0; dim];
        for j in 0..dim {
            for i in 0..dim {
                column[i] = m[i * dim + j];
            }
            self.apply(&mut column);
            for i in 0..dim {
                m[i * dim + j] = column[i];
            }
        }
    }
}

fn identity(dim: usize) -> Vec<f64> {
    let mut m = vec![0.0; dim * dim];
    for i in 0..dim {
        m[i * dim + i] = 1.0;
    }
    m
}

/// `out = sign · rotation · v`.
fn rotate(rotation: &[f64], v: &[f64], sign: f64, out: &mut [f64]) {
    let dim = v.len();
    for (i, o) in out.iter_mut().enumerate() {
        *o = sign * rotation[i * dim..][..dim].iter().zip(v).map(|(r, x)| r * x).sum::<f64>();
    }
}

/// The point `p` of the frame of A, where A is at distance `t` in direction `a` from the
/// origin (A's frame being the pure translation there), as seen from the origin; plus the
/// gyration of composing the two translations (the triangle's defect).
///
/// With ψ the angle between `a` and p's direction, the triangle O, A, P has sides t, r
/// and angle π − ψ at A, so
/// `sinh²(R/2) = sinh²((t − r)/2) + sinh t · sinh r · |a + ξ|²/4` (a sum of non-negative
/// terms, evaluated in log-domain so that R in the thousands neither overflows nor
/// cancels), and the angles at O and P follow from the four-part formula,
/// `tan β = sin ψ / cosh t ÷ (sinh(t − r)/(sinh r cosh t) + |a + ξ|²/2)`.
fn compose(t: f64, a: &[f64], p: &Polar) -> (Polar, Option<Turn>) {
    let r = p.radius;
    let xi = &p.direction;
    if r == 0.0 {
        return (Polar { radius: t, direction: a.to_vec() }, None);
    }
    if t == 0.0 {
        return (p.clone(), None);
    }
    let cos_psi: f64 = a.iter().zip(xi).map(|(x, y)| x * y).sum();
    let mut perp: Vec<f64> = xi.iter().zip(a).map(|(x, y)| x - cos_psi * y).collect();
    let sin_psi = perp.iter().map(|x| x * x).sum::<f64>().sqrt();
    let sum_sq: f64 = a.iter().zip(xi).map(|(x, y)| (x + y) * (x + y)).sum();
    let radius = distance_from_half_sinh_sq(ln_half_sinh_sq(t, r, sum_sq));

    let (ln_sinh_t, ln_sinh_r) = (ln_sinh(t), ln_sinh(r));
    let (ln_cosh_t, ln_cosh_r) = (ln_cosh(t), ln_cosh(r));
    let ln_sinh_gap = ln_sinh((t - r).abs());
    let gap_sign = (t - r).signum();
    let beta = (sin_psi * (-ln_cosh_t).exp())
        .atan2(gap_sign * (ln_sinh_gap - ln_sinh_r - ln_cosh_t).exp() + sum_sq / 2.0);
    let gamma = (sin_psi * (-ln_cosh_r).exp())
        .atan2(-gap_sign * (ln_sinh_gap - ln_sinh_t - ln_cosh_r).exp() + sum_sq / 2.0);

    if sin_psi == 0.0 {
        // Collinear: straight on, or back past the origin.
        let sign = if beta.abs() < PI / 2.0 { 1.0 } else { -1.0 };
        return (Polar { radius, direction: a.iter().map(|x| sign * x).collect() }, None);
    }
    for x in &mut perp {
        *x /= sin_psi;
    }
    let (sb, cb) = beta.sin_cos();
    let mut direction: Vec<f64> = a.iter().zip(&perp).map(|(x, e)| cb * x + sb * e).collect();
    let length = direction.iter().map(|x| x * x).sum::<f64>().sqrt();
    for x in &mut direction {
        *x /= length;
    }
    let psi = sin_psi.atan2(cos_psi);
    let defect = psi - beta - gamma;
    // Möbius gyrations turn against the direction of travel: from the second translation's
    // direction back towards the first (checked against nested Möbius additions in tests).
    let turn = Turn { e1: a.to_vec(), e2: perp, angle: -defect };
    (Polar { radius, direction }, Some(turn))
}

/// `ln sinh²(d/2)` for the third side of a triangle with sides `r1`, `r2` whose unit
/// directions differ by `spread = |ξ₁ ∓ ξ₂|²` (law of cosines written as a sum).
fn ln_half_sinh_sq(r1: f64, r2: f64, spread: f64) -> f64 {
    let first = 2.0 * ln_sinh((r1 - r2).abs() / 2.0);
    let second = ln_sinh(r1) + ln_sinh(r2) + (spread / 4.0).ln();
    log_add_exp(first, second)
}

/// d from `ln sinh²(d/2)`: `d = 2·asinh(e^(l/2))`, without overflow for huge d.
fn distance_from_half_sinh_sq(l: f64) -> f64 {
    if l == f64::NEG_INFINITY {
        return 0.0;
    }
    let h = l / 2.0;
    if h > 20.0 {
        2.0 * (h + LN_2 + (-2.0 * h).exp() / 4.0)
    } else {
        2.0 * h.exp().asinh()
    }
}

fn ln_sinh(x: f64) -> f64 {
    if x == 0.0 {
        f64::NEG_INFINITY
    } else if x > 20.0 {
        x - LN_2 + (-(-2.0 * x).exp()).ln_1p()
    } else {
        x.sinh().ln()
    }
}

fn ln_cosh(x: f64) -> f64 {
    let x = x.abs();
    x - LN_2 + (-2.0 * x).exp().ln_1p()
}

fn log_add_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + (-(a - b).abs()).exp().ln_1p()
}

/// A reflection mapping one unit vector onto another (angles are all that matter, so a
/// reflection serves as well as a rotation).
struct Householder {
    v: Vec<f64>,
    vv: f64,
}

impl Householder {
    fn mapping(from: &[f64], to: &[f64]) -> Householder {
        let v: Vec<f64> = from.iter().zip(to).map(|(f, t)| f - t).collect();
        let vv = v.iter().map(|x| x * x).sum();
        Householder { v, vv }
    }

    fn apply(&self, x: &mut [f64]) {
        if self.vv < 1e-30 {
            return;
        }
        let k = 2.0 * x.iter().zip(&self.v).map(|(a, b)| a * b).sum::<f64>() / self.vv;
        for (a, b) in x.iter_mut().zip(&self.v) {
            *a -= k * b;
        }
        let n = x.iter().map(|a| a * a).sum::<f64>().sqrt();
        for a in x.iter_mut() {
            *a /= n;
        }
    }
}

/// Well-separated unit vectors, one set per size, with their smallest pairwise angle.
struct SphericalCodes {
    dim: usize,
    seed: u64,
    cache: HashMap<usize, (Vec<f64>, f64)>,
}

/// Pairs × dimension × iterations above which repulsion is skipped (random directions).
const REPULSION_BUDGET: f64 = 3e8;

impl SphericalCodes {
    fn new(dim: usize, seed: u64) -> Self {
        SphericalCodes { dim, seed, cache: HashMap::new() }
    }

    fn get(&mut self, k: usize) -> (&[f64], f64) {
        let (dim, seed) = (self.dim, self.seed);
        let (code, angle) = self.cache.entry(k).or_insert_with(|| spherical_code(k, dim, seed));
        (code, *angle)
    }
}

fn spherical_code(k: usize, dim: usize, seed: u64) -> (Vec<f64>, f64) {
    let mut code = vec![0.0; k * dim];
    if dim == 2 {
        for i in 0..k {
            let (s, c) = (2.0 * PI * i as f64 / k as f64).sin_cos();
            code[i * dim] = c;
            code[i * dim + 1] = s;
        }
    } else if k <= 2 * dim {
        // Cross-polytope vertices ±e_i: 90° apart (180° for two).
        for i in 0..k {
            code[i * dim + i / 2] = if i % 2 == 0 { 1.0 } else { -1.0 };
        }
    } else {
        let mut rng = SplitMix64(seed ^ (k as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        for x in code.iter_mut() {
            *x = rng.normal();
        }
        for row in code.chunks_mut(dim) {
            normalize(row);
        }
        let iterations = (REPULSION_BUDGET / (k as f64 * k as f64 * dim as f64)).min(300.0) as usize;
        repel(&mut code, dim, iterations);
    }
    let angle = min_angle(&code, dim);
    (code, angle)
}

/// Spread points on the sphere by steepest descent on the energy Σ 1/|xᵢ − xⱼ|², with a
/// shrinking step, keeping the configuration with the largest minimum angle.
fn repel(code: &mut [f64], dim: usize, iterations: usize) {
    let k = code.len() / dim;
    let mut best = code.to_vec();
    let mut best_angle = min_angle(code, dim);
    let mut force = vec![0.0; code.len()];
    for it in 0..iterations {
        force.iter_mut().for_each(|f| *f = 0.0);
        for i in 0..k {
            for j in (i + 1)..k {
                let mut d2 = 0.0;
                for q in 0..dim {
                    let diff = code[i * dim + q] - code[j * dim + q];
                    d2 += diff * diff;
                }
                let w = 1.0 / (d2 * d2).max(1e-300);
                for q in 0..dim {
                    let diff = (code[i * dim + q] - code[j * dim + q]) * w;
                    force[i * dim + q] += diff;
                    force[j * dim + q] -= diff;
                }
            }
        }
        let step = 0.2 * best_angle * (1.0 - it as f64 / iterations as f64).max(0.05);
        for (row, f) in code.chunks_mut(dim).zip(force.chunks_mut(dim)) {
            let radial: f64 = row.iter().zip(f.iter()).map(|(x, y)| x * y).sum();
            for (y, x) in f.iter_mut().zip(row.iter()) {
                *y -= radial * x;
            }
            let fnorm = f.iter().map(|x| x * x).sum::<f64>().sqrt();
            if fnorm > 0.0 {
                for (x, y) in row.iter_mut().zip(f.iter()) {
                    *x += step * y / fnorm;
                }
                normalize(row);
            }
        }
        let angle = min_angle(code, dim);
        if angle > best_angle {
            best_angle = angle;
            best.copy_from_slice(code);
        }
    }
    code.copy_from_slice(&best);
}

fn min_angle(code: &[f64], dim: usize) -> f64 {
    let k = code.len() / dim;
    let mut best = PI;
    for i in 0..k {
        for j in (i + 1)..k {
            let d2: f64 = (0..dim).map(|q| (code[i * dim + q] - code[j * dim + q]).powi(2)).sum();
            // The chord gives the angle without acos's loss near 0 and π.
            best = best.min(2.0 * (d2.sqrt() / 2.0).min(1.0).asin());
        }
    }
    best
}

fn normalize(x: &mut [f64]) {
    let n = x.iter().map(|a| a * a).sum::<f64>().sqrt();
    if n > 0.0 {
        x.iter_mut().for_each(|a| *a /= n);
    } else {
        x[0] = 1.0;
    }
}

/// Neighbours in compressed rows.
struct Adjacency {
    start: Vec<usize>,
    neighbours: Vec<u32>,
}

impl Adjacency {
    fn new(n: usize, edges: &[(u64, u64)]) -> Result<Adjacency, EmbedError> {
        let mut degree = vec![0usize; n];
        for (index, &(u, v)) in edges.iter().enumerate() {
            for node in [u, v] {
                if node >= n as u64 {
                    return Err(EmbedError::NodeOutOfRange { index, u, v, node, n });
                }
            }
            if u == v {
                return Err(EmbedError::SelfLoop { index, node: u });
            }
            degree[u as usize] += 1;
            degree[v as usize] += 1;
        }
        let mut start = vec![0usize; n + 1];
        for w in 0..n {
            start[w + 1] = start[w] + degree[w];
        }
        let mut fill = start.clone();
        let mut neighbours = vec![0u32; start[n]];
        for &(u, v) in edges {
            neighbours[fill[u as usize]] = v as u32;
            fill[u as usize] += 1;
            neighbours[fill[v as usize]] = u as u32;
            fill[v as usize] += 1;
        }
        Ok(Adjacency { start, neighbours })
    }
}

/// Parent, depth and visiting order of a breadth-first traversal.
type Traversal = (Vec<u32>, Vec<u32>, Vec<u32>);

/// The breadth-first spanning tree from `root`.
fn breadth_first(adjacency: &Adjacency, root: usize) -> Result<Traversal, EmbedError> {
    let n = adjacency.start.len() - 1;
    let unseen = u32::MAX;
    let mut parent = vec![unseen; n];
    let mut depth = vec![0u32; n];
    let mut order = Vec::with_capacity(n);
    parent[root] = root as u32;
    let mut queue = VecDeque::from([root]);
    while let Some(w) = queue.pop_front() {
        order.push(w as u32);
        for &x in &adjacency.neighbours[adjacency.start[w]..adjacency.start[w + 1]] {
            if parent[x as usize] == unseen && x as usize != root {
                parent[x as usize] = w as u32;
                depth[x as usize] = depth[w] + 1;
                queue.push_back(x as usize);
            }
        }
    }
    if order.len() < n {
        let example = (0..n).find(|&w| parent[w] == unseen).unwrap_or(0);
        return Err(EmbedError::Disconnected { unreachable: n - order.len(), n, root, example });
    }
    Ok((parent, depth, order))
}

/// A tiny deterministic generator (SplitMix64): reproducible codes and samples without a
/// dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoincareBall;

    fn options(dim: usize, c: f64, tau: Option<f64>) -> EmbedOptions {
        EmbedOptions { dim, c, tau, ..EmbedOptions::default() }
    }

    /// A deterministic random recursive tree: node i > 0 hangs under a random earlier node.
    fn random_tree(n: usize, seed: u64) -> Vec<(u64, u64)> {
        let mut rng = SplitMix64(seed);
        (1..n as u64).map(|i| (rng.next() % i, i)).collect()
    }

    /// Each node's point by the definition: nested Möbius additions of the edge points
    /// along the path from the root, x = B₁ ⊕ (B₂ ⊕ (… ⊕ B_k)).
    fn reference_points(e: &TreeEmbedding) -> Vec<Vec<f64>> {
        let ball = PoincareBall::new(e.c()).unwrap();
        let scale = (e.c().sqrt() * e.tau() / 2.0).tanh() / e.c().sqrt();
        (0..e.len())
            .map(|w| {
                let mut x = vec![0.0; e.dim()];
                let mut node = w;
                while let Some(p) = e.parent(node) {
                    let b: Vec<f64> = e.direction(node).unwrap().iter().map(|d| d * scale).collect();
                    x = ball.mobius_add(&b, &x).unwrap();
                    node = p;
                }
                x
            })
            .collect()
    }

    fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
        assert!((got - want).abs() <= tol * want.abs().max(1e-300), "{what}: got {got}, want {want}");
    }

    #[test]
    fn shallow_embeddings_match_nested_mobius_additions() {
        // Depth ≤ 4 with τ = 1.3 keeps every point well inside f64's reach, so the
        // definition evaluated naively is a trustworthy reference (1e-12 absolute/relative).
        let edges = random_tree(60, 7);
        for (dim, c) in [(2, 1.0), (3, 0.7), (5, 2.0)] {
            let e = embed_tree(60, &edges, &options(dim, c, Some(1.3))).unwrap();
            let want = reference_points(&e);
            let got = e.poincare_points();
            assert_eq!(got.clamped, 0);
            for (w, x) in want.iter().enumerate() {
                for (g, r) in got.coordinates[w * dim..][..dim].iter().zip(x) {
                    assert!((g - r).abs() < 1e-12, "dim {dim} node {w}: {g} vs {r}");
                }
            }
            let ball = PoincareBall::new(c).unwrap();
            for s in [0, 5, 17, 59] {
                let from = e.distances_from(s).unwrap();
                for v in 0..60 {
                    let want = ball.distance(&want[s], &want[v]).unwrap();
                    assert!((from[v] - want).abs() <= 1e-10 * want.max(1.0), "dim {dim} {s}->{v}: {} vs {want}", from[v]);
                    let pair = e.distance(s, v).unwrap();
                    assert!((pair - want).abs() <= 1e-10 * want.max(1.0), "dim {dim} pair {s},{v}: {pair} vs {want}");
                }
            }
        }
    }

    #[test]
    fn deep_nodes_stay_apart() {
        // A straight path 300 edges long (a node with one child continues straight on),
        // then two leaves under its end: 1500 units from the origin, where f64 points
        // have long since collapsed onto the boundary.
        let mut edges: Vec<(u64, u64)> = (0..300).map(|i| (i, i + 1)).collect();
        edges.push((300, 301));
        edges.push((300, 302));
        let tau = 5.0;
        let e = embed_tree(303, &edges, &options(2, 1.0, Some(tau))).unwrap();
        assert_rel(e.distance(0, 300).unwrap(), 1500.0, 1e-12, "root to end of path");
        assert_rel(e.distance(17, 250).unwrap(), 233.0 * tau, 1e-12, "along the path");
        // The three directions at node 300 are 120° apart: sinh(d/2) = sinh τ · sin 60°.
        let siblings = 2.0 * (tau.sinh() * (PI / 3.0).sin()).asinh();
        assert_rel(e.distance(301, 302).unwrap(), siblings, 1e-12, "sibling leaves");
        assert_rel(e.distances_from(301).unwrap()[302], siblings, 1e-12, "sibling leaves, walked");
        let from_root = e.distances_from(0).unwrap();
        assert_rel(from_root[301], e.distance(0, 301).unwrap(), 1e-12, "walk vs pair");
        // The angle at node 300 between the way back and leaf 301 is 120°, so
        // cosh d = cosh 1500 cosh 5 + ½ sinh 1500 sinh 5, i.e. d = 1500 + ln(cosh 5 + ½ sinh 5)
        // up to e^-3000.
        assert!((from_root[301] - 1500.0 - (tau.cosh() + tau.sinh() / 2.0).ln()).abs() < 1e-9, "{}", from_root[301]);
        let points = e.poincare_points();
        assert!(points.clamped > 250, "{}", points.clamped);
        assert_rel(points.max_radius, from_root[301], 1e-12, "max radius");
    }

    #[test]
    fn derived_tau_meets_the_target_distortion() {
        // Sarkar's τ = ((1+ε)/ε)·ln(4/β): worst-case distortion at most about 1 + ε,
        // and every node's neighbours are its nearest points (MAP 1).
        let edges = random_tree(400, 3);
        for dim in [2, 3, 8] {
            let e = embed_tree(400, &edges, &EmbedOptions { dim, epsilon: 0.1, ..EmbedOptions::default() }).unwrap();
            let q = e.quality(usize::MAX, 0);
            assert!(q.exact);
            assert_eq!(q.sources, 400);
            assert_eq!(q.pairs, 400 * 399);
            assert!(q.worst_distortion <= 1.1 + 1e-9, "dim {dim}: {q:?}");
            assert!(q.average_distortion < 0.1, "dim {dim}: {q:?}");
            assert_eq!(q.mean_average_precision, 1.0, "dim {dim}: {q:?}");
        }
    }

    #[test]
    fn a_short_edge_length_shows_in_the_measures() {
        // τ far below Sarkar's bound squeezes subtrees together: the distortion and the
        // precision reported must get worse, not stay at their ideal values.
        let edges = random_tree(400, 3);
        let e = embed_tree(400, &edges, &options(2, 1.0, Some(0.05))).unwrap();
        let q = e.quality(usize::MAX, 0);
        assert!(q.worst_distortion > 2.0, "{q:?}");
        assert!(q.mean_average_precision < 1.0, "{q:?}");
    }

    #[test]
    fn sampled_quality_uses_distinct_sources() {
        let edges = random_tree(3000, 11);
        let e = embed_tree(3000, &edges, &EmbedOptions::default()).unwrap();
        let q = e.quality(50, 9);
        assert!(!q.exact);
        assert_eq!(q.sources, 50);
        assert_eq!(q.pairs, 50 * 2999);
        assert_eq!(q.mean_average_precision, 1.0);
    }

    #[test]
    fn graphs_embed_through_their_spanning_tree() {
        // A 4-cycle plus a chord: 3 tree edges, 2 left out.
        let edges = [(0, 1), (1, 2), (2, 3), (3, 0), (0, 2)];
        let e = embed_tree(4, &edges, &options(2, 1.0, Some(2.0))).unwrap();
        assert_eq!(e.non_tree_edges(), 2);
        assert_eq!(e.parent(2), Some(0));
        assert_eq!(e.max_depth(), 1);
        assert_rel(e.distance(0, 3).unwrap(), 2.0, 1e-12, "edge");
    }

    #[test]
    fn spherical_codes_spread_directions() {
        // 12 points on the 2-sphere: the icosahedron's 63.4° is optimal; repulsion must
        // get within a few degrees. 7 in 3-space is past the cross-polytope.
        let (_, angle) = spherical_code(12, 3, 1);
        assert!(angle > 58f64.to_radians(), "{}", angle.to_degrees());
        let (_, angle) = spherical_code(7, 3, 1);
        assert!(angle > 70f64.to_radians(), "{}", angle.to_degrees());
        let (_, angle) = spherical_code(6, 3, 1);
        assert!((angle - PI / 2.0).abs() < 1e-15);
        let (_, angle) = spherical_code(5, 2, 1);
        assert!((angle - 2.0 * PI / 5.0).abs() < 1e-15);
    }

    #[test]
    fn bad_graphs_and_options_are_errors() {
        let o = EmbedOptions::default();
        assert_eq!(embed_tree(0, &[], &o).unwrap_err(), EmbedError::Empty);
        assert!(matches!(embed_tree(3, &[(0, 1), (1, 5)], &o), Err(EmbedError::NodeOutOfRange { index: 1, node: 5, .. })));
        assert!(matches!(embed_tree(3, &[(0, 1), (2, 2)], &o), Err(EmbedError::SelfLoop { index: 1, node: 2 })));
        let err = embed_tree(4, &[(0, 1), (2, 3)], &o).unwrap_err();
        assert!(matches!(err, EmbedError::Disconnected { unreachable: 2, .. }), "{err}");
        assert!(err.to_string().contains("not connected to the root 0"), "{err}");
        for bad in [
            EmbedOptions { dim: 1, ..o.clone() },
            EmbedOptions { c: f64::NAN, ..o.clone() },
            EmbedOptions { root: 9, ..o.clone() },
            EmbedOptions { tau: Some(-1.0), ..o.clone() },
            EmbedOptions { epsilon: 0.0, ..o.clone() },
        ] {
            assert!(matches!(embed_tree(2, &[(0, 1)], &bad), Err(EmbedError::InvalidOption { .. })), "{bad:?}");
        }
        let e = embed_tree(1, &[], &o).unwrap();
        assert_eq!(e.distance(0, 0).unwrap(), 0.0);
        assert_eq!(e.distance(0, 1).unwrap_err(), EmbedError::NoSuchNode { node: 1, n: 1 });
        assert_eq!(e.quality(10, 0).pairs, 0);
    }
}
