use hsync_protocol::{CodecError, ErrorCode, ErrorReply};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The other side answered with an error reply.
    #[error("{0}")]
    Remote(ErrorReply),
    #[error("no answer on {subject} within {millis} ms")]
    Timeout { subject: String, millis: u64 },
    #[error("nobody serves {0} (is the service running?)")]
    NoResponders(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("NATS: {0}")]
    Nats(String),
}

impl BusError {
    /// The error reply to pass on to our own caller.
    pub fn to_reply(&self) -> ErrorReply {
        match self {
            BusError::Remote(e) => e.clone(),
            BusError::Timeout { .. } => ErrorReply::new(ErrorCode::Timeout, self.to_string()),
            BusError::NoResponders(_) => ErrorReply::new(ErrorCode::Unavailable, self.to_string()),
            BusError::Codec(c) => c.to_reply(),
            BusError::Nats(_) => ErrorReply::new(ErrorCode::Unavailable, self.to_string()),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.to_reply().code
    }
}
