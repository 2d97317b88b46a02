//! The HyperSync wire contract: everything two processes must agree on.
//!
//! * [`names`] — every subject, stream, bucket and service name, derived from one
//!   configurable prefix. No other crate writes a subject string by hand.
//! * [`codec`] — MessagePack with named fields (or JSON when the message says
//!   `Content-Type: application/json`), zstd above a threshold, bounded decoding.
//! * [`value`] — the dynamic values that flow between operators, with f64 vectors and
//!   matrices as compact typed arrays.
//! * message types: [`job`], [`policy`], [`operator`], [`record`], [`receipt`], [`audit`].
//! * [`error`] — stable error codes and the error reply every service sends.
//!
//! Fields are added with `#[serde(default)]` so old readers and writers keep working;
//! unknown fields are ignored; a missing required field is an error naming the field.
#![forbid(unsafe_code)]

pub mod audit;
pub mod codec;
pub mod error;
pub mod job;
pub mod names;
pub mod operator;
pub mod policy;
pub mod pool;
pub mod receipt;
pub mod record;
pub mod value;

pub use codec::{Codec, CodecError, Format};
pub use error::{ErrorCode, ErrorReply};
pub use names::Names;
pub use value::{Arg, Blob, Hash32, Reference, Tensor, Value};
