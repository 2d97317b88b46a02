//! The `geo.*` operators: argument parsing and limits around the geometry library.
//! Every function checks what it is given and names the argument at fault.

use std::path::{Path, PathBuf};

use hsync_embeddings::EmbeddingTable;
use hsync_geometry::{embed_tree, EmbedOptions, GeometryError, MeanOptions, PoincareBall};
use hsync_operators::Args;
use hsync_protocol::operator::ArgKind;
use hsync_protocol::{ErrorCode, ErrorReply, Tensor, Value};

/// Most points a geodesic may be asked for.
pub const MAX_GEODESIC_POINTS: i64 = 10_000;
/// Largest dimension accepted.
pub const MAX_DIMENSION: usize = 65_536;
/// Most points for pairwise distances (the answer has n² numbers).
pub const MAX_PAIRWISE_POINTS: usize = 1_024;
/// Most coordinates in one point set (points × dimension).
pub const MAX_POINT_SET: usize = 16 << 20;
/// Most nodes of an embedded graph.
pub const MAX_EMBED_NODES: i64 = 1_000_000;
/// Largest embedding dimension (spherical codes cost grows with it).
pub const MAX_EMBED_DIMENSION: i64 = 64;
/// Most source nodes for an embedding's quality measures (each costs O(n)).
pub const MAX_QUALITY_SOURCES: i64 = 1_000;

/// What the service was configured with that some operators need.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Where `geo.table.*` find embedding tables (`<name>.emb`); none: those operators
    /// refuse.
    pub tables_dir: Option<PathBuf>,
}

/// How an operator computes.
#[derive(Clone, Copy)]
pub enum Compute {
    /// From its arguments alone: deterministic, so its results are cached.
    Pure(fn(&Args) -> Result<Value, ErrorReply>),
    /// Reads embedding tables, which can be replaced: neither deterministic nor cached.
    Tables(fn(&Path, &Args) -> Result<Value, ErrorReply>),
}

/// One operator served by this service.
pub struct GeoOp {
    pub id: &'static str,
    pub description: &'static str,
    pub args: &'static [(&'static str, ArgKind, bool)],
    pub compute: Compute,
    /// Entries its cache holds unless configured otherwise (embeddings are large).
    pub default_entries: Option<usize>,
}

impl GeoOp {
    /// Runs the operator.
    pub fn call(&self, ctx: &Context, args: &Args) -> Result<Value, ErrorReply> {
        match self.compute {
            Compute::Pure(f) => f(args),
            Compute::Tables(f) => {
                let dir = ctx.tables_dir.as_deref().ok_or_else(|| {
                    ErrorReply::new(
                        ErrorCode::InvalidArgument,
                        format!(
                            "{} reads embedding tables, and this geometry-cache has no tables directory (HSYNC_GEO_TABLES_DIR)",
                            self.id
                        ),
                    )
                })?;
                f(dir, args)
            }
        }
    }

    /// Whether its results depend on its arguments only.
    pub fn deterministic(&self) -> bool {
        matches!(self.compute, Compute::Pure(_))
    }
}

const C: (&str, ArgKind, bool) = ("c", ArgKind::Number, false);

pub const OPS: &[GeoOp] = &[
    GeoOp {
        id: "geo.poincare.distance",
        description: "geodesic distance between two points of the Poincaré ball of curvature -c",
        args: &[("x", ArgKind::Vector, true), ("y", ArgKind::Vector, true), C],
        compute: Compute::Pure(poincare_distance),
        default_entries: None,
    },
    GeoOp {
        id: "geo.geodesic",
        description: "n points evenly spaced along the geodesic from x to y in the Poincaré ball",
        args: &[("x", ArgKind::Vector, true), ("y", ArgKind::Vector, true), ("n", ArgKind::Integer, false), C],
        compute: Compute::Pure(geodesic),
        default_entries: None,
    },
    GeoOp {
        id: "geo.poincare.mobius_add",
        description: "Möbius addition x ⊕ y in the Poincaré ball",
        args: &[("x", ArgKind::Vector, true), ("y", ArgKind::Vector, true), C],
        compute: Compute::Pure(mobius_add),
        default_entries: None,
    },
    GeoOp {
        id: "geo.poincare.exp",
        description: "exponential map: the point reached from x (default the origin) along tangent vector v",
        args: &[("v", ArgKind::Numbers, true), ("x", ArgKind::Vector, false), C],
        compute: Compute::Pure(exp_map),
        default_entries: None,
    },
    GeoOp {
        id: "geo.poincare.log",
        description: "logarithmic map: the tangent vector at x (default the origin) pointing to y",
        args: &[("y", ArgKind::Vector, true), ("x", ArgKind::Vector, false), C],
        compute: Compute::Pure(log_map),
        default_entries: None,
    },
    GeoOp {
        id: "geo.pairwise_distances",
        description: "n x n matrix of distances between points of the Poincaré ball",
        args: &[("points", ArgKind::Points, true), C],
        compute: Compute::Pure(pairwise_distances),
        default_entries: None,
    },
    GeoOp {
        id: "geo.frechet_mean",
        description: "weighted Fréchet mean (barycenter) of points of the Poincaré ball",
        args: &[("points", ArgKind::Points, true), ("weights", ArgKind::Numbers, false), C],
        compute: Compute::Pure(frechet_mean),
        default_entries: None,
    },
    GeoOp {
        id: "geo.knn",
        // `neighbours`, not `k`: policy context attributes share one type per name, and
        // `k` is vec.scale's decimal factor.
        description: "the `neighbours` (default 10) points nearest to a query in the Poincaré ball: {indices, distances}",
        args: &[
            ("query", ArgKind::Vector, true),
            ("points", ArgKind::Points, true),
            ("neighbours", ArgKind::Integer, false),
            C,
        ],
        compute: Compute::Pure(knn),
        default_entries: None,
    },
    GeoOp {
        id: "geo.embed",
        description: "Sarkar embedding of a tree (or a graph's BFS spanning tree) into the Poincaré ball, with distortion and MAP",
        args: &[
            ("edges", ArgKind::Edges, true),
            ("nodes", ArgKind::Integer, false),
            ("dim", ArgKind::Integer, false),
            ("root", ArgKind::Integer, false),
            ("tau", ArgKind::Number, false),
            ("epsilon", ArgKind::Number, false),
            ("quality_sources", ArgKind::Integer, false),
            C,
        ],
        compute: Compute::Pure(embed),
        default_entries: Some(64),
    },
    GeoOp {
        id: "geo.table.knn",
        description: "the `neighbours` (default 10) rows of a stored embedding table nearest to a query: {indices, distances}",
        args: &[("table", ArgKind::String, true), ("query", ArgKind::Vector, true), ("neighbours", ArgKind::Integer, false)],
        compute: Compute::Tables(table_knn),
        default_entries: None,
    },
];

fn invalid(arg: &str, msg: impl std::fmt::Display) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidArgument, format!("argument `{arg}`: {msg}")).at_argument(arg)
}

fn geometry_error(e: GeometryError) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidArgument, e.to_string())
}

fn vector(args: &Args, name: &str) -> Result<Option<Vec<f64>>, ErrorReply> {
    let Some(v) = args.get(name) else { return Ok(None) };
    let p = v
        .as_vector()
        .ok_or_else(|| invalid(name, format!("expected a vector of numbers, found {}", v.type_name())))?;
    if p.len() > MAX_DIMENSION {
        return Err(invalid(name, format!("dimension {} exceeds {MAX_DIMENSION}", p.len())));
    }
    Ok(Some(p))
}

fn required_vector(args: &Args, name: &str) -> Result<Vec<f64>, ErrorReply> {
    vector(args, name)?.ok_or_else(|| invalid(name, "missing"))
}

/// A point set as rows (each one a point), at least one.
fn point_set(args: &Args, name: &str) -> Result<Vec<Vec<f64>>, ErrorReply> {
    let v = args.get(name).ok_or_else(|| invalid(name, "missing"))?;
    let (rows, cols, data) = v
        .as_matrix()
        .ok_or_else(|| invalid(name, format!("expected a list of equally long points, found {}", v.type_name())))?;
    if rows == 0 {
        return Err(invalid(name, "no points"));
    }
    if cols == 0 || cols > MAX_DIMENSION {
        return Err(invalid(name, format!("dimension must be between 1 and {MAX_DIMENSION}, found {cols}")));
    }
    if data.len() > MAX_POINT_SET {
        return Err(invalid(name, format!("{rows} points x {cols} coordinates exceed {MAX_POINT_SET} numbers")));
    }
    Ok(data.chunks(cols).map(<[f64]>::to_vec).collect())
}

fn number(args: &Args, name: &str) -> Result<Option<f64>, ErrorReply> {
    args.get(name)
        .map(|v| v.as_f64().ok_or_else(|| invalid(name, format!("expected a number, found {}", v.type_name()))))
        .transpose()
}

fn integer(args: &Args, name: &str, range: std::ops::RangeInclusive<i64>, default: i64) -> Result<i64, ErrorReply> {
    let n = match args.get(name) {
        None => default,
        Some(v) => v.as_i64().ok_or_else(|| invalid(name, format!("expected an integer, found {}", v.type_name())))?,
    };
    if !range.contains(&n) {
        return Err(invalid(name, format!("must be between {} and {}, found {n}", range.start(), range.end())));
    }
    Ok(n)
}

fn ball(args: &Args) -> Result<PoincareBall, ErrorReply> {
    PoincareBall::new(number(args, "c")?.unwrap_or(1.0)).map_err(|e| invalid("c", e))
}

fn vector_value(v: Vec<f64>) -> Value {
    Value::Tensor(Tensor::vector(v))
}

fn matrix_value(rows: usize, cols: usize, data: Vec<f64>) -> Result<Value, ErrorReply> {
    Tensor::matrix(rows, cols, data)
        .map(Value::Tensor)
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, e))
}

pub fn poincare_distance(args: &Args) -> Result<Value, ErrorReply> {
    let (x, y) = (required_vector(args, "x")?, required_vector(args, "y")?);
    ball(args)?.distance(&x, &y).map(Value::Float).map_err(geometry_error)
}

pub fn geodesic(args: &Args) -> Result<Value, ErrorReply> {
    let (x, y) = (required_vector(args, "x")?, required_vector(args, "y")?);
    let n = integer(args, "n", 2..=MAX_GEODESIC_POINTS, 10)? as usize;
    let points = ball(args)?.geodesic(&x, &y, n).map_err(geometry_error)?;
    matrix_value(n, x.len(), points.into_iter().flatten().collect())
}

fn mobius_add(args: &Args) -> Result<Value, ErrorReply> {
    let (x, y) = (required_vector(args, "x")?, required_vector(args, "y")?);
    ball(args)?.mobius_add(&x, &y).map(vector_value).map_err(geometry_error)
}

fn exp_map(args: &Args) -> Result<Value, ErrorReply> {
    let v = required_vector(args, "v")?;
    let ball = ball(args)?;
    match vector(args, "x")? {
        Some(x) => ball.exp_map(&x, &v),
        None => ball.exp0(&v),
    }
    .map(vector_value)
    .map_err(geometry_error)
}

fn log_map(args: &Args) -> Result<Value, ErrorReply> {
    let y = required_vector(args, "y")?;
    let ball = ball(args)?;
    match vector(args, "x")? {
        Some(x) => ball.log_map(&x, &y),
        None => ball.log0(&y),
    }
    .map(vector_value)
    .map_err(geometry_error)
}

fn pairwise_distances(args: &Args) -> Result<Value, ErrorReply> {
    let points = point_set(args, "points")?;
    if points.len() > MAX_PAIRWISE_POINTS {
        return Err(invalid(
            "points",
            format!("at most {MAX_PAIRWISE_POINTS} points (the answer has n² numbers), found {}", points.len()),
        ));
    }
    let n = points.len();
    let d = ball(args)?.pairwise_distances(&points).map_err(geometry_error)?;
    matrix_value(n, n, d)
}

fn frechet_mean(args: &Args) -> Result<Value, ErrorReply> {
    let points = point_set(args, "points")?;
    let weights = vector(args, "weights")?;
    let mean = ball(args)?
        .frechet_mean(&points, weights.as_deref(), MeanOptions::default())
        .map_err(geometry_error)?;
    if !mean.converged {
        return Err(ErrorReply::new(
            ErrorCode::Internal,
            format!("the mean did not converge in {} steps (gradient {:e})", mean.iterations, mean.gradient_norm),
        ));
    }
    Ok(vector_value(mean.point))
}

fn knn(args: &Args) -> Result<Value, ErrorReply> {
    let query = required_vector(args, "query")?;
    let points = point_set(args, "points")?;
    let k = integer(args, "neighbours", 1..=points.len() as i64, 10.min(points.len() as i64))? as usize;
    let found = ball(args)?.knn(&query, &points, k).map_err(geometry_error)?;
    Ok(neighbours_value(&found))
}

fn neighbours_value(found: &[hsync_geometry::Neighbour]) -> Value {
    Value::Map(
        [
            ("indices".to_string(), Value::Array(found.iter().map(|n| Value::Int(n.index as i64)).collect())),
            ("distances".to_string(), vector_value(found.iter().map(|n| n.distance).collect())),
        ]
        .into(),
    )
}

/// A table name: letters, digits, '-', '_' and '.', not starting with '.', so that it
/// names a file inside the tables directory and nothing else.
fn table_path(dir: &Path, args: &Args) -> Result<(String, PathBuf), ErrorReply> {
    let v = args.get("table").ok_or_else(|| invalid("table", "missing"))?;
    let name = v.as_str().ok_or_else(|| invalid("table", format!("expected a name, found {}", v.type_name())))?;
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(invalid(
            "table",
            format!("{name:?} is not a table name (1-128 letters, digits, '-', '_', '.', not starting with '.')"),
        ));
    }
    Ok((name.to_string(), dir.join(format!("{name}.emb"))))
}

fn table_knn(dir: &Path, args: &Args) -> Result<Value, ErrorReply> {
    let (name, path) = table_path(dir, args)?;
    if !path.is_file() {
        return Err(ErrorReply::new(ErrorCode::NotFound, format!("no embedding table `{name}` (looked for {})", path.display()))
            .at_argument("table"));
    }
    // Mapped, not read: a table larger than memory is searched page by page.
    let table = EmbeddingTable::open(&path).map_err(|e| invalid("table", e))?;
    if table.rows() == 0 {
        return Err(invalid("table", format!("table `{name}` has no rows")));
    }
    let ball = PoincareBall::new(table.c()).map_err(|e| invalid("table", format!("table `{name}`: {e}")))?;
    let query = required_vector(args, "query")?;
    let k = integer(args, "neighbours", 1..=table.rows() as i64, 10.min(table.rows() as i64))? as usize;
    let rows: Vec<&[f64]> = table.data().chunks(table.dim()).collect();
    let found = ball.knn(&query, &rows, k).map_err(geometry_error)?;
    Ok(neighbours_value(&found))
}

fn embed(args: &Args) -> Result<Value, ErrorReply> {
    let value = args.get("edges").ok_or_else(|| invalid("edges", "missing"))?;
    let bad_edges = || invalid("edges", format!("expected a list of [u, v] pairs of node indices, found {}", value.type_name()));
    let (rows, cols, data) = value.as_matrix().ok_or_else(bad_edges)?;
    if rows > 0 && cols != 2 {
        return Err(invalid("edges", format!("each edge is a pair [u, v], found rows of {cols}")));
    }
    let mut edges = Vec::with_capacity(rows);
    let mut highest = -1i64;
    for (i, pair) in data.chunks(2).enumerate() {
        let mut ends = [0u64; 2];
        for (end, &x) in ends.iter_mut().zip(pair) {
            if !(x.fract() == 0.0 && (0.0..MAX_EMBED_NODES as f64).contains(&x)) {
                return Err(invalid("edges", format!("edge {i}: node {x} is not an integer in 0..{MAX_EMBED_NODES}")));
            }
            *end = x as u64;
            highest = highest.max(x as i64);
        }
        edges.push((ends[0], ends[1]));
    }
    let nodes = integer(args, "nodes", 1..=MAX_EMBED_NODES, highest + 1)?;
    let dim = integer(args, "dim", 2..=MAX_EMBED_DIMENSION, 2)?;
    let root = integer(args, "root", 0..=nodes - 1, 0)?;
    let sources = integer(args, "quality_sources", 0..=MAX_QUALITY_SOURCES, 32)?;
    let defaults = EmbedOptions::default();
    let options = EmbedOptions {
        dim: dim as usize,
        c: number(args, "c")?.unwrap_or(1.0),
        root: root as usize,
        tau: number(args, "tau")?,
        epsilon: number(args, "epsilon")?.unwrap_or(defaults.epsilon),
        seed: defaults.seed,
    };
    let embedding = embed_tree(nodes as usize, &edges, &options)
        .map_err(|e| ErrorReply::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let points = embedding.poincare_points();
    let mut out = std::collections::BTreeMap::from([
        ("points".to_string(), matrix_value(nodes as usize, dim as usize, points.coordinates)?),
        ("tau".to_string(), Value::Float(embedding.tau())),
        ("max_depth".to_string(), Value::Int(embedding.max_depth() as i64)),
        ("max_radius".to_string(), Value::Float(points.max_radius)),
        ("clamped".to_string(), Value::Int(points.clamped as i64)),
        ("non_tree_edges".to_string(), Value::Int(embedding.non_tree_edges() as i64)),
        ("min_angle".to_string(), Value::Float(embedding.min_angle())),
    ]);
    if sources > 0 {
        let q = embedding.quality(sources as usize, 1);
        out.insert(
            "quality".to_string(),
            Value::Map(
                [
                    ("sources".to_string(), Value::Int(q.sources as i64)),
                    ("pairs".to_string(), Value::Int(q.pairs as i64)),
                    ("exact".to_string(), Value::Bool(q.exact)),
                    ("average_distortion".to_string(), Value::Float(q.average_distortion)),
                    ("worst_distortion".to_string(), Value::Float(q.worst_distortion)),
                    ("mean_average_precision".to_string(), Value::Float(q.mean_average_precision)),
                ]
                .into(),
            ),
        );
    }
    Ok(Value::Map(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn vec_value(x: &[f64]) -> Value {
        Value::Tensor(Tensor::vector(x.to_vec()))
    }

    fn rows(points: &[&[f64]]) -> Value {
        Value::Array(points.iter().map(|p| vec_value(p)).collect())
    }

    fn edges(pairs: &[(i64, i64)]) -> Value {
        Value::Array(pairs.iter().map(|&(u, v)| Value::Array(vec![Value::Int(u), Value::Int(v)])).collect())
    }

    fn as_vec(v: &Value) -> Vec<f64> {
        v.as_vector().unwrap_or_else(|| panic!("not a vector: {v:?}"))
    }

    fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
        let Value::Map(m) = v else { panic!("not a map: {v:?}") };
        m.get(key).unwrap_or_else(|| panic!("no `{key}` in {m:?}"))
    }

    #[test]
    fn distance_from_origin_matches_closed_form() {
        let a = args(&[("x", vec_value(&[0.0, 0.0])), ("y", vec_value(&[0.5, 0.0]))]);
        let Value::Float(d) = poincare_distance(&a).unwrap() else { panic!("not a float") };
        // d(0, r) = 2 artanh(r) for c = 1
        assert!((d - 2.0 * 0.5f64.atanh()).abs() < 1e-12, "{d}");
    }

    #[test]
    fn bad_arguments_are_named() {
        let a = args(&[("x", vec_value(&[2.0])), ("y", vec_value(&[0.2]))]);
        assert_eq!(poincare_distance(&a).unwrap_err().code, ErrorCode::InvalidArgument);
        let a = args(&[("x", vec_value(&[0.1])), ("y", vec_value(&[0.2])), ("n", Value::Int(1))]);
        assert_eq!(geodesic(&a).unwrap_err().argument.as_deref(), Some("n"));
        let a = args(&[("v", Value::Str("east".into()))]);
        assert_eq!(exp_map(&a).unwrap_err().argument.as_deref(), Some("v"));
        let a = args(&[("points", rows(&[])), ("query", vec_value(&[0.1]))]);
        assert_eq!(knn(&a).unwrap_err().argument.as_deref(), Some("points"));
        let a = args(&[("points", rows(&[&[0.1], &[0.2]])), ("query", vec_value(&[0.1])), ("neighbours", Value::Int(3))]);
        let e = knn(&a).unwrap_err();
        assert_eq!(e.argument.as_deref(), Some("neighbours"), "{e:?}");
        assert!(e.message.contains("between 1 and 2"), "{}", e.message);
    }

    #[test]
    fn exp_and_log_invert_each_other_at_a_base_point_and_at_the_origin() {
        let x = vec_value(&[0.2, -0.1]);
        let y = [0.4, 0.5];
        for base in [Some(x), None] {
            let mut a = args(&[("y", vec_value(&y)), ("c", Value::Float(0.5))]);
            if let Some(b) = &base {
                a.insert("x".into(), b.clone());
            }
            let v = log_map(&a).unwrap();
            let mut a = args(&[("v", v), ("c", Value::Float(0.5))]);
            if let Some(b) = &base {
                a.insert("x".into(), b.clone());
            }
            let back = as_vec(&exp_map(&a).unwrap());
            assert!(back.iter().zip(y).all(|(p, q)| (p - q).abs() < 1e-12), "{back:?}");
        }
        // A long tangent vector is fine: it is not a point.
        let far = as_vec(&exp_map(&args(&[("v", vec_value(&[12.0, 0.0]))])).unwrap());
        assert!(far[0] < 1.0 && far[0] > 0.99999, "{far:?}");
    }

    #[test]
    fn mobius_add_has_the_origin_as_identity() {
        let a = args(&[("x", vec_value(&[0.3, 0.1])), ("y", vec_value(&[0.0, 0.0]))]);
        assert_eq!(as_vec(&mobius_add(&a).unwrap()), vec![0.3, 0.1]);
    }

    #[test]
    fn pairwise_mean_and_knn_answer_for_a_point_set() {
        let pts = rows(&[&[0.0, 0.0], &[0.5, 0.0], &[-0.5, 0.0], &[0.0, 0.9]]);
        let Value::Tensor(d) = pairwise_distances(&args(&[("points", pts.clone())])).unwrap() else { panic!() };
        assert_eq!(d.shape(), &[4, 4]);
        assert!((d.data()[1] - 2.0 * 0.5f64.atanh()).abs() < 1e-12);
        assert_eq!(d.data()[4 + 2], d.data()[2 * 4 + 1]);
        // The mean of two symmetric points is the origin.
        let two = rows(&[&[0.5, 0.0], &[-0.5, 0.0]]);
        let mean = as_vec(&frechet_mean(&args(&[("points", two)])).unwrap());
        assert!(mean.iter().all(|m| m.abs() < 1e-12), "{mean:?}");
        // Weights pull it: all weight on the first point gives that point.
        let two = rows(&[&[0.5, 0.0], &[-0.5, 0.0]]);
        let mean = as_vec(&frechet_mean(&args(&[("points", two), ("weights", vec_value(&[1.0, 0.0]))])).unwrap());
        assert!((mean[0] - 0.5).abs() < 1e-9, "{mean:?}");
        let found = knn(&args(&[("points", pts), ("query", vec_value(&[0.45, 0.0])), ("neighbours", Value::Int(2))])).unwrap();
        assert_eq!(field(&found, "indices"), &Value::Array(vec![Value::Int(1), Value::Int(0)]));
        assert_eq!(as_vec(field(&found, "distances")).len(), 2);
        let many = Value::Array(vec![vec_value(&[0.0]); MAX_PAIRWISE_POINTS + 1]);
        assert_eq!(pairwise_distances(&args(&[("points", many)])).unwrap_err().argument.as_deref(), Some("points"));
    }

    #[test]
    fn embed_returns_points_and_quality() {
        // A star with 4 leaves under node 0 and one grandchild.
        let a = args(&[("edges", edges(&[(0, 1), (0, 2), (0, 3), (0, 4), (4, 5)])), ("tau", Value::Float(2.0))]);
        let out = embed(&a).unwrap();
        let Value::Tensor(points) = field(&out, "points") else { panic!() };
        assert_eq!(points.shape(), &[6, 2]);
        let norm = |i: usize| points.data()[2 * i..2 * i + 2].iter().map(|x| x * x).sum::<f64>().sqrt();
        // Depth 1 is at distance τ = 2 from the origin: norm tanh(1).
        assert!((norm(1) - 1f64.tanh()).abs() < 1e-12, "{}", norm(1));
        assert_eq!(field(&out, "max_depth"), &Value::Int(2));
        assert_eq!(field(&out, "clamped"), &Value::Int(0));
        assert_eq!(field(field(&out, "quality"), "exact"), &Value::Bool(true));
        assert_eq!(field(field(&out, "quality"), "mean_average_precision"), &Value::Float(1.0));
    }

    #[test]
    fn embed_refuses_bad_graphs_clearly() {
        for (edges_value, want) in [
            (edges(&[(0, 1), (1, -2)]), "not an integer in 0.."),
            (Value::Array(vec![Value::Array(vec![Value::Int(0), Value::Int(1), Value::Int(2)])]), "pair [u, v]"),
            (edges(&[(0, 1), (2, 3)]), "not connected to the root"),
            (edges(&[(0, 0)]), "self-loop"),
            (Value::Str("0-1".into()), "pairs of node indices"),
        ] {
            let e = embed(&args(&[("edges", edges_value)])).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(e.message.contains(want), "{} should say {want}", e.message);
        }
        let e = embed(&args(&[("edges", edges(&[(0, 1)])), ("dim", Value::Int(1000))])).unwrap_err();
        assert_eq!(e.argument.as_deref(), Some("dim"));
        let e = embed(&args(&[("edges", edges(&[(0, 1)])), ("nodes", Value::Int(1))])).unwrap_err();
        assert!(e.message.contains("nodes are numbered 0..1"), "{}", e.message);
    }
}

#[cfg(test)]
mod table_tests {
    use super::*;

    fn op(id: &str) -> &'static GeoOp {
        OPS.iter().find(|o| o.id == id).unwrap()
    }

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn table_knn_searches_a_mapped_table_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let rows: Vec<Vec<f64>> = (0..100).map(|i| vec![i as f64 / 120.0, 0.0]).collect();
        hsync_embeddings::write(&dir.path().join("line.emb"), 1.0, 2, &rows).unwrap();
        let ctx = Context { tables_dir: Some(dir.path().to_path_buf()) };
        let knn = op("geo.table.knn");
        assert!(!knn.deterministic());
        let query = Value::Tensor(Tensor::vector(vec![50.0 / 120.0, 0.0]));
        let out = knn
            .call(&ctx, &args(&[("table", Value::Str("line".into())), ("query", query.clone()), ("neighbours", Value::Int(3))]))
            .unwrap();
        let Value::Map(m) = out else { panic!("a map") };
        assert_eq!(m["indices"], Value::Array(vec![Value::Int(50), Value::Int(49), Value::Int(51)]));

        for (name, code, needle) in [
            ("../line", ErrorCode::InvalidArgument, "not a table name"),
            (".hidden", ErrorCode::InvalidArgument, "not a table name"),
            ("nope", ErrorCode::NotFound, "no embedding table `nope`"),
        ] {
            let e = knn.call(&ctx, &args(&[("table", Value::Str(name.into())), ("query", query.clone())])).unwrap_err();
            assert_eq!(e.code, code, "{name}: {}", e.message);
            assert!(e.message.contains(needle), "{name}: {}", e.message);
        }
        std::fs::write(dir.path().join("junk.emb"), b"not a table").unwrap();
        let e = knn.call(&ctx, &args(&[("table", Value::Str("junk".into())), ("query", query.clone())])).unwrap_err();
        assert!(e.message.contains("not an embedding table"), "{}", e.message);
        let e = knn.call(&Context::default(), &args(&[("table", Value::Str("line".into())), ("query", query)])).unwrap_err();
        assert!(e.message.contains("HSYNC_GEO_TABLES_DIR"), "{}", e.message);
    }
}
