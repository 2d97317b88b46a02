//! Built-in operators: deterministic, bit-exact from run to run, CPU-bound.
//!
//! Each operator is an [`OperatorDef`] (what the registry and policies see) plus a plain
//! function over already-resolved arguments. Argument errors name the argument and say
//! what was expected and what was found.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use hsync_protocol::operator::{ArgKind, ArgSpec, OperatorDef, Provider};
use hsync_protocol::{ErrorCode, ErrorReply, Tensor, Value};

/// Resolved arguments of one invocation.
pub type Args = BTreeMap<String, Value>;
pub type OperatorFn = fn(&Args) -> Result<Value, ErrorReply>;

pub struct Builtin {
    pub def: OperatorDef,
    pub run: OperatorFn,
}

/// Version of every built-in; bump when an operator's output changes.
pub const BUILTIN_VERSION: &str = "1";

fn def(id: &str, caps: &[&str], args: &[(&str, ArgKind)], description: &str) -> OperatorDef {
    OperatorDef {
        id: id.to_string(),
        version: BUILTIN_VERSION.to_string(),
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        deterministic: true,
        cacheable: true,
        provider: Provider::Builtin,
        args: args
            .iter()
            .map(|(n, k)| ArgSpec {
                name: n.to_string(),
                kind: *k,
                required: true,
            })
            .collect(),
        cost_hint: 1,
        description: description.to_string(),
    }
}

/// The whole built-in catalogue.
pub fn catalogue() -> &'static [Builtin] {
    static CATALOGUE: OnceLock<Vec<Builtin>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        use ArgKind::*;
        vec![
            Builtin { def: def("const", &["data"], &[("value", Any)], "returns its argument"), run: op_const },
            Builtin { def: def("vec.add", &["math"], &[("a", Vector), ("b", Vector)], "element-wise sum"), run: vec_add },
            Builtin { def: def("vec.scale", &["math"], &[("v", Vector), ("k", Number)], "multiplies a vector by a number"), run: vec_scale },
            Builtin { def: def("vec.dot", &["math"], &[("a", Vector), ("b", Vector)], "dot product"), run: vec_dot },
            Builtin { def: def("vec.norm", &["math"], &[("v", Vector)], "Euclidean norm"), run: vec_norm },
            Builtin { def: def("mat.matmul", &["math"], &[("a", Matrix), ("b", Matrix)], "matrix product"), run: mat_matmul },
            Builtin { def: def("stats.mean", &["statistics"], &[("x", Vector)], "arithmetic mean"), run: stats_mean },
            Builtin { def: def("stats.variance", &["statistics"], &[("x", Vector)], "sample variance (n - 1)"), run: stats_variance },
            Builtin { def: def("data.hash", &["data"], &[("value", Any)], "SHA-256 of the canonical encoding, hex"), run: data_hash },
        ]
    })
}

/// Looks a built-in up by id.
pub fn find(id: &str) -> Option<&'static Builtin> {
    catalogue().iter().find(|b| b.def.id == id)
}

/// Checks a value against an argument kind; `None` when it fits.
pub fn kind_mismatch(kind: ArgKind, v: &Value) -> Option<String> {
    let ok = match kind {
        ArgKind::Any => true,
        ArgKind::Number => v.as_f64().is_some(),
        ArgKind::Integer => v.as_i64().is_some(),
        ArgKind::String => matches!(v, Value::Str(_)),
        ArgKind::Bytes => matches!(v, Value::Bytes(_)),
        ArgKind::Vector => v.as_vector().is_some(),
        ArgKind::Matrix | ArgKind::Points => v.as_matrix().is_some(),
    };
    (!ok).then(|| format!("expected {}, found {}", kind_name(kind), v.type_name()))
}

fn kind_name(kind: ArgKind) -> &'static str {
    match kind {
        ArgKind::Any => "any value",
        ArgKind::Number => "a number",
        ArgKind::Integer => "an integer",
        ArgKind::String => "a string",
        ArgKind::Bytes => "bytes",
        ArgKind::Vector => "a vector of numbers",
        ArgKind::Matrix => "a matrix (array of equally long rows of numbers)",
        ArgKind::Points => "a list of points (equally long vectors)",
    }
}

fn invalid(arg: &str, msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidArgument, format!("argument `{arg}`: {}", msg.into())).at_argument(arg)
}

fn get<'a>(args: &'a Args, name: &str) -> Result<&'a Value, ErrorReply> {
    args.get(name).ok_or_else(|| invalid(name, "missing"))
}

fn vector(args: &Args, name: &str) -> Result<Vec<f64>, ErrorReply> {
    let v = get(args, name)?;
    let x = v
        .as_vector()
        .ok_or_else(|| invalid(name, format!("expected a vector of numbers, found {}", v.type_name())))?;
    if let Some(i) = x.iter().position(|f| !f.is_finite()) {
        return Err(invalid(name, format!("element {i} is not a finite number")));
    }
    Ok(x)
}

fn number(args: &Args, name: &str) -> Result<f64, ErrorReply> {
    let v = get(args, name)?;
    match v.as_f64() {
        Some(x) if x.is_finite() => Ok(x),
        Some(_) => Err(invalid(name, "must be finite")),
        None => Err(invalid(name, format!("expected a number, found {}", v.type_name()))),
    }
}

fn same_len(a: &[f64], b: &[f64]) -> Result<(), ErrorReply> {
    if a.len() != b.len() {
        return Err(invalid("b", format!("length {} differs from `a`'s length {}", b.len(), a.len())));
    }
    Ok(())
}

fn op_const(args: &Args) -> Result<Value, ErrorReply> {
    get(args, "value").cloned()
}

fn vec_add(args: &Args) -> Result<Value, ErrorReply> {
    let (a, b) = (vector(args, "a")?, vector(args, "b")?);
    same_len(&a, &b)?;
    Ok(Tensor::vector(a.iter().zip(&b).map(|(x, y)| x + y).collect()).into())
}

fn vec_scale(args: &Args) -> Result<Value, ErrorReply> {
    let (v, k) = (vector(args, "v")?, number(args, "k")?);
    Ok(Tensor::vector(v.iter().map(|x| x * k).collect()).into())
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Sequential summation keeps the result bit-exact from run to run.
    a.iter().zip(b).fold(0.0, |acc, (x, y)| acc + x * y)
}

fn vec_dot(args: &Args) -> Result<Value, ErrorReply> {
    let (a, b) = (vector(args, "a")?, vector(args, "b")?);
    same_len(&a, &b)?;
    Ok(Value::Float(dot(&a, &b)))
}

fn vec_norm(args: &Args) -> Result<Value, ErrorReply> {
    let v = vector(args, "v")?;
    Ok(Value::Float(dot(&v, &v).sqrt()))
}

/// Largest matrix side accepted, so a hostile job cannot ask for a huge allocation.
const MAX_MATRIX_ELEMENTS: usize = 16 * 1024 * 1024;

fn matrix(args: &Args, name: &str) -> Result<(usize, usize, Vec<f64>), ErrorReply> {
    let v = get(args, name)?;
    let m = v
        .as_matrix()
        .ok_or_else(|| invalid(name, format!("expected a matrix, found {}", v.type_name())))?;
    if m.2.iter().any(|x| !x.is_finite()) {
        return Err(invalid(name, "all elements must be finite"));
    }
    Ok(m)
}

fn mat_matmul(args: &Args) -> Result<Value, ErrorReply> {
    let (n, k, a) = matrix(args, "a")?;
    let (k2, m, b) = matrix(args, "b")?;
    if k != k2 {
        return Err(invalid("b", format!("has {k2} rows but `a` has {k} columns")));
    }
    if n.saturating_mul(m) > MAX_MATRIX_ELEMENTS {
        return Err(invalid("b", format!("result {n}x{m} is too large")));
    }
    let mut out = vec![0.0; n * m];
    for i in 0..n {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..m {
                out[i * m + j] += aip * b[p * m + j];
            }
        }
    }
    Tensor::matrix(n, m, out)
        .map(Value::Tensor)
        .map_err(|e| ErrorReply::new(ErrorCode::Internal, e))
}

fn stats_mean(args: &Args) -> Result<Value, ErrorReply> {
    let x = vector(args, "x")?;
    if x.is_empty() {
        return Err(invalid("x", "must not be empty"));
    }
    Ok(Value::Float(x.iter().sum::<f64>() / x.len() as f64))
}

fn stats_variance(args: &Args) -> Result<Value, ErrorReply> {
    let x = vector(args, "x")?;
    if x.len() < 2 {
        return Err(invalid("x", "needs at least two elements"));
    }
    let mean = x.iter().sum::<f64>() / x.len() as f64;
    let ss: f64 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    Ok(Value::Float(ss / (x.len() - 1) as f64))
}

/// SHA-256 over the canonical encoding (MessagePack, named fields, sorted map keys).
pub fn canonical_hash<T: serde_like::Canonical + ?Sized>(v: &T) -> [u8; 32] {
    let bytes = v.canonical_bytes();
    let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Types with a canonical byte encoding.
pub mod serde_like {
    use super::*;
    pub trait Canonical {
        fn canonical_bytes(&self) -> Vec<u8>;
    }
    impl Canonical for Value {
        fn canonical_bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec_named(self).unwrap_or_default()
        }
    }
    impl Canonical for Args {
        fn canonical_bytes(&self) -> Vec<u8> {
            rmp_serde::to_vec_named(self).unwrap_or_default()
        }
    }
}

fn data_hash(args: &Args) -> Result<Value, ErrorReply> {
    Ok(Value::Str(hex::encode(canonical_hash(get(args, "value")?))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, Value)]) -> Args {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn vecv(x: &[f64]) -> Value {
        Value::Tensor(Tensor::vector(x.to_vec()))
    }

    #[test]
    fn vector_math() {
        let a = args(&[("a", vecv(&[1.0, 2.0])), ("b", vecv(&[3.0, 4.5]))]);
        assert_eq!((find("vec.add").unwrap().run)(&a).unwrap(), vecv(&[4.0, 6.5]));
        assert_eq!((find("vec.dot").unwrap().run)(&a).unwrap(), Value::Float(12.0));
        let n = args(&[("v", vecv(&[3.0, 4.0]))]);
        assert_eq!((find("vec.norm").unwrap().run)(&n).unwrap(), Value::Float(5.0));
    }

    #[test]
    fn matmul_checks_shapes() {
        let a = Value::Tensor(Tensor::matrix(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap());
        let b = Value::Tensor(Tensor::matrix(2, 1, vec![1.0, 1.0]).unwrap());
        let out = mat_matmul(&args(&[("a", a.clone()), ("b", b)])).unwrap();
        assert_eq!(out.as_matrix(), Some((2, 1, vec![3.0, 7.0])));
        let bad = Value::Tensor(Tensor::matrix(3, 1, vec![1.0; 3]).unwrap());
        let err = mat_matmul(&args(&[("a", a), ("b", bad)])).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        assert_eq!(err.argument.as_deref(), Some("b"));
    }

    #[test]
    fn wrong_types_name_the_argument() {
        let err = vec_add(&args(&[("a", Value::Str("x".into())), ("b", vecv(&[1.0]))])).unwrap_err();
        assert!(err.message.contains("argument `a`"), "{}", err.message);
        assert!(err.message.contains("found string"), "{}", err.message);
        let err = stats_variance(&args(&[("x", vecv(&[1.0]))])).unwrap_err();
        assert!(err.message.contains("at least two"));
    }

    #[test]
    fn statistics() {
        let x = args(&[("x", vecv(&[1.0, 2.0, 3.0, 4.0]))]);
        assert_eq!(stats_mean(&x).unwrap(), Value::Float(2.5));
        assert_eq!(stats_variance(&x).unwrap(), Value::Float(5.0 / 3.0));
    }

    #[test]
    fn canonical_hash_is_stable_and_order_independent() {
        let a = args(&[("x", Value::Int(1)), ("y", Value::Int(2))]);
        let mut b = Args::new();
        b.insert("y".into(), Value::Int(2));
        b.insert("x".into(), Value::Int(1));
        assert_eq!(canonical_hash(&a), canonical_hash(&b));
        assert_ne!(canonical_hash(&a), canonical_hash(&args(&[("x", Value::Int(2))])));
    }

    #[test]
    fn every_builtin_is_versioned_and_unique() {
        let mut ids: Vec<_> = catalogue().iter().map(|b| b.def.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), catalogue().len());
        assert!(catalogue().iter().all(|b| b.def.version == BUILTIN_VERSION));
    }
}
