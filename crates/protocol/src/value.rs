//! Dynamic values passed between operators, and the compact binary newtypes.
//!
//! In MessagePack an f64 tensor travels as `{"shape": [..], "f64": <bin, little-endian>}`
//! (8 bytes per element instead of 9 and one allocation on decode); in JSON it is written
//! as plain nested arrays, and JSON clients may send plain arrays, which operators accept
//! wherever a vector or matrix is expected.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most dimensions a tensor may have; deeper shapes are rejected as malformed.
pub const MAX_TENSOR_RANK: usize = 8;

/// A dense f64 tensor in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f64>,
}

impl Tensor {
    /// Errors when the shape does not match the number of elements.
    pub fn new(shape: Vec<usize>, data: Vec<f64>) -> Result<Tensor, String> {
        if shape.len() > MAX_TENSOR_RANK {
            return Err(format!(
                "tensor rank {} exceeds the maximum {MAX_TENSOR_RANK}",
                shape.len()
            ));
        }
        let expected = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| "tensor shape overflows".to_string())?;
        if expected != data.len() {
            return Err(format!(
                "tensor shape {shape:?} needs {expected} elements, found {}",
                data.len()
            ));
        }
        Ok(Tensor { shape, data })
    }

    pub fn vector(data: Vec<f64>) -> Tensor {
        Tensor {
            shape: vec![data.len()],
            data,
        }
    }

    pub fn matrix(rows: usize, cols: usize, data: Vec<f64>) -> Result<Tensor, String> {
        Tensor::new(vec![rows, cols], data)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn data(&self) -> &[f64] {
        &self.data
    }

    pub fn into_data(self) -> Vec<f64> {
        self.data
    }

    fn le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * 8);
        for x in &self.data {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out
    }

    fn from_le_bytes(shape: Vec<usize>, bytes: &[u8]) -> Result<Tensor, String> {
        if !bytes.len().is_multiple_of(8) {
            return Err(format!(
                "tensor data is {} bytes, not a multiple of 8",
                bytes.len()
            ));
        }
        let data = bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact yields 8 bytes")))
            .collect();
        Tensor::new(shape, data)
    }

    /// Nested arrays, for JSON.
    fn to_nested(&self) -> Value {
        fn build(shape: &[usize], data: &[f64]) -> Value {
            match shape {
                [] => Value::Float(data.first().copied().unwrap_or(0.0)),
                [_] => Value::Array(data.iter().map(|x| Value::Float(*x)).collect()),
                [n, rest @ ..] => {
                    let stride: usize = rest.iter().product();
                    Value::Array(
                        (0..*n)
                            .map(|i| build(rest, &data[i * stride..(i + 1) * stride]))
                            .collect(),
                    )
                }
            }
        }
        build(&self.shape, &self.data)
    }
}

/// A value flowing between operators.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Array(Vec<Value>),
    Map(BTreeMap<String, Value>),
    Tensor(Tensor),
}

impl Value {
    /// Short type name for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Tensor(t) if t.shape.len() == 1 => "vector",
            Value::Tensor(t) if t.shape.len() == 2 => "matrix",
            Value::Tensor(_) => "tensor",
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A 1-D tensor, or an array of numbers.
    pub fn as_vector(&self) -> Option<Vec<f64>> {
        match self {
            Value::Tensor(t) if t.shape.len() == 1 => Some(t.data.clone()),
            Value::Array(items) => items.iter().map(Value::as_f64).collect(),
            _ => None,
        }
    }

    /// A 2-D tensor, or an array of equally long arrays of numbers: (rows, cols, data).
    pub fn as_matrix(&self) -> Option<(usize, usize, Vec<f64>)> {
        match self {
            Value::Tensor(t) if t.shape.len() == 2 => Some((t.shape[0], t.shape[1], t.data.clone())),
            Value::Array(rows) => {
                let mut data = Vec::new();
                let mut cols = None;
                for row in rows {
                    let r = row.as_vector()?;
                    if *cols.get_or_insert(r.len()) != r.len() {
                        return None;
                    }
                    data.extend(r);
                }
                Some((rows.len(), cols.unwrap_or(0), data))
            }
            _ => None,
        }
    }

    /// Follows a dotted path of map keys and array indexes (`"a.0.b"`).
    pub fn at_path(&self, path: &str) -> Option<&Value> {
        let mut cur = self;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            cur = match cur {
                Value::Map(m) => m.get(part)?,
                Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    /// Approximate encoded size, for payload limits and policy context.
    pub fn approx_size(&self) -> usize {
        match self {
            Value::Null | Value::Bool(_) => 1,
            Value::Int(_) | Value::Float(_) => 9,
            Value::Str(s) => s.len() + 5,
            Value::Bytes(b) => b.len() + 5,
            Value::Array(a) => 5 + a.iter().map(Value::approx_size).sum::<usize>(),
            Value::Map(m) => 5 + m.iter().map(|(k, v)| k.len() + 5 + v.approx_size()).sum::<usize>(),
            Value::Tensor(t) => 16 + t.data.len() * 8,
        }
    }
}

impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<i64> for Value {
    fn from(x: i64) -> Self {
        Value::Int(x)
    }
}
impl From<&str> for Value {
    fn from(x: &str) -> Self {
        Value::Str(x.to_string())
    }
}
impl From<String> for Value {
    fn from(x: String) -> Self {
        Value::Str(x)
    }
}
impl From<Tensor> for Value {
    fn from(x: Tensor) -> Self {
        Value::Tensor(x)
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(f) => s.serialize_f64(*f),
            Value::Str(v) => s.serialize_str(v),
            Value::Bytes(b) => s.serialize_bytes(b),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Value::Tensor(t) => {
                if s.is_human_readable() {
                    t.to_nested().serialize(s)
                } else {
                    let mut map = s.serialize_map(Some(2))?;
                    map.serialize_entry("shape", &t.shape)?;
                    map.serialize_entry("f64", serde_bytes::Bytes::new(&t.le_bytes()))?;
                    map.end()
                }
            }
        }
    }
}

/// Most elements an array's declared length reserves room for (1 KiB of `Value`s): a
/// 5-byte header can declare 2^32 - 1 elements, and with room for 4096 elements at every
/// level, 1024 nested such headers (a 5 KB message) reserved 200 MB before failing.
const MAX_PREALLOCATED_ELEMENTS: usize = 1024 / std::mem::size_of::<Value>();

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value (null, bool, number, string, bytes, array, map or tensor)")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("integer {v} is larger than the i64 maximum")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Value, E> {
        Ok(Value::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        // Cap the pre-allocation: the length hint comes from untrusted input, and arrays
        // nest with every level's allocation live at once (MessagePack allows 1024
        // levels), so each level may reserve only a little; longer arrays grow as their
        // elements arrive.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOCATED_ELEMENTS));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = BTreeMap::new();
        while let Some((k, v)) = access.next_entry::<String, Value>()? {
            map.insert(k, v);
        }
        // A map that is exactly {shape, f64: bin} is a tensor.
        if map.len() == 2 {
            if let (Some(Value::Array(shape)), Some(Value::Bytes(bytes))) =
                (map.get("shape"), map.get("f64"))
            {
                let shape: Option<Vec<usize>> = shape
                    .iter()
                    .map(|d| d.as_i64().and_then(|d| usize::try_from(d).ok()))
                    .collect();
                let shape = shape.ok_or_else(|| {
                    de::Error::custom("tensor shape must be non-negative integers")
                })?;
                return Tensor::from_le_bytes(shape, bytes)
                    .map(Value::Tensor)
                    .map_err(de::Error::custom);
            }
        }
        Ok(Value::Map(map))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

/// A reference to another node's output, optionally to a field or element of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub node: String,
    /// Dotted path of map keys and array indexes inside the output.
    pub path: Option<String>,
}

/// A node argument: a literal value or a reference to another node's output.
///
/// On the wire a reference is the map `{"ref": "<node>"}` (optionally with `"path"`); a
/// literal map that itself has a `ref` key is written `{"lit": {...}}`.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Ref(Reference),
    Lit(Value),
}

impl Arg {
    pub fn reference(node: &str) -> Arg {
        Arg::Ref(Reference {
            node: node.to_string(),
            path: None,
        })
    }
}

impl From<Value> for Arg {
    fn from(v: Value) -> Arg {
        if let Value::Map(m) = &v {
            let only_ref_keys = m.keys().all(|k| k == "ref" || k == "path");
            if only_ref_keys {
                if let Some(Value::Str(node)) = m.get("ref") {
                    let path = match m.get("path") {
                        Some(Value::Str(p)) => Some(p.clone()),
                        Some(Value::Int(i)) => Some(i.to_string()),
                        _ => None,
                    };
                    return Arg::Ref(Reference {
                        node: node.clone(),
                        path,
                    });
                }
            }
            if m.len() == 1 {
                if let Some(inner) = m.get("lit") {
                    return Arg::Lit(inner.clone());
                }
            }
        }
        Arg::Lit(v)
    }
}

impl Serialize for Arg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Arg::Ref(r) => {
                let mut map = s.serialize_map(Some(if r.path.is_some() { 2 } else { 1 }))?;
                map.serialize_entry("ref", &r.node)?;
                if let Some(p) = &r.path {
                    map.serialize_entry("path", p)?;
                }
                map.end()
            }
            Arg::Lit(v @ Value::Map(m)) if m.contains_key("ref") || m.contains_key("lit") => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("lit", v)?;
                map.end()
            }
            Arg::Lit(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arg, D::Error> {
        Value::deserialize(d).map(Arg::from)
    }
}

/// Opaque bytes: `bin` in MessagePack, base64 in JSON.
#[derive(Clone, Debug, PartialEq, Eq, Default, Hash)]
pub struct Blob(pub Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            use base64::Engine;
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        if d.is_human_readable() {
            use base64::Engine;
            let s = String::deserialize(d)?;
            base64::engine::general_purpose::STANDARD
                .decode(s.as_bytes())
                .map(Blob)
                .map_err(|e| de::Error::custom(format!("invalid base64: {e}")))
        } else {
            serde_bytes::ByteBuf::deserialize(d).map(|b| Blob(b.into_vec()))
        }
    }
}

/// A SHA-256 hash: 32-byte `bin` in MessagePack, lower-case hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash32(pub [u8; 32]);

impl Hash32 {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    pub fn from_hex(s: &str) -> Result<Hash32, String> {
        let bytes = hex::decode(s).map_err(|e| format!("invalid hex hash: {e}"))?;
        Hash32::from_slice(&bytes)
    }
    pub fn from_slice(b: &[u8]) -> Result<Hash32, String> {
        <[u8; 32]>::try_from(b)
            .map(Hash32)
            .map_err(|_| format!("a hash is 32 bytes, found {}", b.len()))
    }
}

impl fmt::Debug for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "Hash32({})", self.to_hex())
    }
}

impl fmt::Display for Hash32 {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Hash32 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash32 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Hash32, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            Hash32::from_hex(&s).map_err(de::Error::custom)
        } else {
            let b = serde_bytes::ByteBuf::deserialize(d)?;
            Hash32::from_slice(&b).map_err(de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgpack_roundtrip(v: &Value) -> Value {
        let bytes = rmp_serde::to_vec_named(v).unwrap();
        rmp_serde::from_slice(&bytes).unwrap()
    }

    #[test]
    fn tensor_travels_as_compact_bin_in_msgpack() {
        let t = Value::Tensor(Tensor::vector(vec![1.0, -2.5, 3.25]));
        let bytes = rmp_serde::to_vec_named(&t).unwrap();
        // map header + "shape" + [3] + "f64" + bin8 header + 24 bytes of data
        assert!(bytes.len() < 3 * 9 + 16, "encoded {} bytes", bytes.len());
        assert_eq!(msgpack_roundtrip(&t), t);
    }

    #[test]
    fn tensor_is_nested_arrays_in_json_and_accepted_back_as_vector() {
        let m = Value::Tensor(Tensor::matrix(2, 2, vec![1.0, 2.0, 3.0, 4.0]).unwrap());
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "[[1.0,2.0],[3.0,4.0]]");
        let back: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back.as_matrix(), Some((2, 2, vec![1.0, 2.0, 3.0, 4.0])));
    }

    #[test]
    fn tensor_with_wrong_length_is_rejected() {
        let mut m = BTreeMap::new();
        m.insert("shape".to_string(), Value::Array(vec![Value::Int(3)]));
        m.insert("f64".to_string(), Value::Bytes(vec![0; 16]));
        let bytes = rmp_serde::to_vec_named(&Value::Map(m)).unwrap();
        let err = rmp_serde::from_slice::<Value>(&bytes).unwrap_err();
        assert!(err.to_string().contains("needs 3 elements"), "{err}");
    }

    #[test]
    fn references_and_literals() {
        let a: Arg = serde_json::from_str(r#"{"ref":"n1","path":"x.0"}"#).unwrap();
        assert_eq!(
            a,
            Arg::Ref(Reference {
                node: "n1".into(),
                path: Some("x.0".into())
            })
        );
        let lit: Arg = serde_json::from_str(r#"{"lit":{"ref":"not a reference"}}"#).unwrap();
        assert!(matches!(lit, Arg::Lit(Value::Map(_))));
        // Round trip of an escaped literal keeps it a literal.
        let again: Arg = serde_json::from_str(&serde_json::to_string(&lit).unwrap()).unwrap();
        assert_eq!(again, lit);
    }

    #[test]
    fn hash32_is_hex_in_json_and_bin_in_msgpack() {
        let h = Hash32([7u8; 32]);
        assert_eq!(serde_json::to_string(&h).unwrap(), format!("\"{}\"", "07".repeat(32)));
        let b = rmp_serde::to_vec(&h).unwrap();
        assert_eq!(b.len(), 34);
        assert_eq!(rmp_serde::from_slice::<Hash32>(&b).unwrap(), h);
        assert!(serde_json::from_str::<Hash32>("\"abcd\"").is_err());
    }

    #[test]
    fn at_path_follows_keys_and_indexes() {
        let v: Value = serde_json::from_str(r#"{"a":[{"b":5}]}"#).unwrap();
        assert_eq!(v.at_path("a.0.b"), Some(&Value::Int(5)));
        assert_eq!(v.at_path("a.1"), None);
    }
}
