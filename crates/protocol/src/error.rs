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

impl ErrorReply {
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
