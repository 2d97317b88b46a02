//! Stable error codes and the error reply.
//!
//! An error reply is a normal reply whose body is an [`ErrorReply`] and whose headers
//! carry the NATS micro error headers (`Nats-Service-Error`, `Nats-Service-Error-Code`)
//! plus `Hsync-Error-Code` with the stable string code, so a client in any language can
//! tell an error from a result without decoding the body.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Stable error codes. Never renumber or rename: clients match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The bytes could not be decoded as the expected message.
    Malformed,
    /// The job is structurally wrong (no nodes, duplicate ids, unknown output, ...).
    InvalidJob,
    /// A node names an operator nobody provides.
    UnknownOperator,
    /// The job's references form a cycle.
    Cycle,
    /// A node references a node that does not exist.
    MissingReference,
    /// An argument is missing, of the wrong type or out of range.
    InvalidArgument,
    /// A policy denied the step.
    PolicyDenied,
    /// The operator ran and failed.
    OperatorFailed,
    /// The thing asked for does not exist.
    NotFound,
    /// The message is larger than allowed.
    PayloadTooLarge,
    /// A deadline passed.
    Timeout,
    /// The service is at capacity; retry later.
    Overloaded,
    /// A service this request needs does not answer.
    Unavailable,
    /// A bug or an unexpected failure on our side.
    Internal,
}

impl ErrorCode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::InvalidJob => "INVALID_JOB",
            ErrorCode::UnknownOperator => "UNKNOWN_OPERATOR",
            ErrorCode::Cycle => "CYCLE",
            ErrorCode::MissingReference => "MISSING_REFERENCE",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::PolicyDenied => "POLICY_DENIED",
            ErrorCode::OperatorFailed => "OPERATOR_FAILED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    pub fn parse(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub const ALL: [ErrorCode; 14] = [
        ErrorCode::Malformed,
        ErrorCode::InvalidJob,
        ErrorCode::UnknownOperator,
        ErrorCode::Cycle,
        ErrorCode::MissingReference,
        ErrorCode::InvalidArgument,
        ErrorCode::PolicyDenied,
        ErrorCode::OperatorFailed,
        ErrorCode::NotFound,
        ErrorCode::PayloadTooLarge,
        ErrorCode::Timeout,
        ErrorCode::Overloaded,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// HTTP-like status for the `Nats-Service-Error-Code` header of NATS micro.
    pub fn status(&self) -> u16 {
        match self {
            ErrorCode::Malformed
            | ErrorCode::InvalidJob
            | ErrorCode::UnknownOperator
            | ErrorCode::Cycle
            | ErrorCode::MissingReference
            | ErrorCode::InvalidArgument => 400,
            ErrorCode::PolicyDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::OperatorFailed => 422,
            ErrorCode::Internal => 500,
            ErrorCode::Overloaded | ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every error reply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    /// Says what was wrong, naming the node, argument or field.
    pub message: String,
    /// The job node concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The argument concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argument: Option<String>,
}

/// Longest `message` [`ErrorReply::bounded`] keeps, in bytes.
pub const MAX_MESSAGE: usize = 1024;
/// Longest `node` or `argument` [`ErrorReply::bounded`] keeps (valid ids are at most 128).
pub const MAX_NAME: usize = 256;

/// `s` when it is at most `max` bytes; otherwise its beginning and its end (what was
/// wrong, and what was expected or where) around a note of how much was left out, in at
/// most `max` + 64 bytes.
pub fn shorten(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut head = max / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - max / 4;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} … ({} bytes left out) … {}", &s[..head], tail - head, &s[tail..])
}

impl ErrorReply {
    /// This reply with its message, node and argument shortened ([`shorten`]) to
    /// [`MAX_MESSAGE`] and [`MAX_NAME`]: they quote the request (an id, an argument name,
    /// a reference, a cycle through every node), which may be megabytes long, and a
    /// reply over NATS's max_payload would reach the client as a different error.
    pub fn bounded(self) -> Self {
        ErrorReply {
            code: self.code,
            message: shorten(self.message, MAX_MESSAGE),
            node: self.node.map(|n| shorten(n, MAX_NAME)),
            argument: self.argument.map(|a| shorten(a, MAX_NAME)),
        }
    }

    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorReply {
            code,
            message: message.into(),
            node: None,
            argument: None,
        }
    }
    pub fn at_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
    pub fn at_argument(mut self, arg: impl Into<String>) -> Self {
        self.argument = Some(arg.into());
        self
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ErrorReply {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_keeps_short_replies_and_shortens_long_ones() {
        let short = ErrorReply::new(ErrorCode::Cycle, "cycle: a -> b -> a").at_node("a").at_argument("v");
        assert_eq!(short.clone().bounded(), short);
        let long = ErrorReply::new(ErrorCode::MissingReference, format!("node `a` references `{}`, which is missing", "x".repeat(1 << 20)))
            .at_node("é".repeat(1000))
            .at_argument("y".repeat(300));
        let b = long.bounded();
        assert_eq!(b.code, ErrorCode::MissingReference);
        assert!(b.message.len() <= MAX_MESSAGE + 64, "{}", b.message.len());
        assert!(b.message.starts_with("node `a` references `xxx"), "{}", b.message);
        assert!(b.message.ends_with("xxx`, which is missing"), "{}", b.message);
        assert!(b.message.contains(" bytes left out) "), "{}", b.message);
        let node = b.node.unwrap();
        assert!(node.len() <= MAX_NAME + 64 && node.starts_with('é') && node.ends_with('é'), "{node}");
        assert!(b.argument.unwrap().len() <= MAX_NAME + 64);
    }
}
