use std::time::Duration;

use clap::Args;
use hsync_protocol::{Codec, Names};

/// NATS connection settings shared by every binary (flags or environment).
#[derive(Args, Clone, Debug)]
pub struct BusConfig {
    /// NATS server URL(s), comma-separated.
    #[arg(long = "nats-url", env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Number of NATS connections in the pool (requests are spread over them).
    #[arg(long = "nats-pool", env = "HSYNC_NATS_POOL", default_value_t = 2)]
    pub pool_size: usize,
    /// Optional NATS credentials file.
    #[arg(long = "nats-creds", env = "NATS_CREDS")]
    pub creds: Option<std::path::PathBuf>,
    /// Optional NATS user (with --nats-password).
    #[arg(long = "nats-user", env = "NATS_USER")]
    pub user: Option<String>,
    #[arg(long = "nats-password", env = "NATS_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Subject prefix of this installation.
    #[arg(long = "prefix", env = "HSYNC_PREFIX", default_value = hsync_protocol::names::DEFAULT_PREFIX)]
    pub prefix: String,
    /// Default timeout for a request, in milliseconds.
    #[arg(long = "request-timeout-ms", env = "HSYNC_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How long to keep retrying the first connection, in seconds.
    #[arg(long = "connect-timeout-s", env = "HSYNC_CONNECT_TIMEOUT_S", default_value_t = 60)]
    pub connect_timeout_s: u64,
    /// Payloads above this many bytes are zstd-compressed.
    #[arg(long = "compress-threshold", env = "HSYNC_COMPRESS_THRESHOLD", default_value_t = hsync_protocol::codec::DEFAULT_COMPRESS_THRESHOLD)]
    pub compress_threshold: usize,
    /// Largest decoded (decompressed) payload accepted, in bytes.
    #[arg(long = "max-decoded-bytes", env = "HSYNC_MAX_DECODED_BYTES", default_value_t = hsync_protocol::codec::DEFAULT_MAX_DECODED_SIZE)]
    pub max_decoded_bytes: usize,
    /// Reuse per-thread encode/decode buffers and zstd contexts (`false` only to measure
    /// what pooling buys).
    #[arg(long = "pooling", env = "HSYNC_POOLING", default_value_t = true, action = clap::ArgAction::Set)]
    pub pooling: bool,
    /// Reply subjects a request may name, by prefix (comma-separated; `*` allows any). A
    /// service answers on the reply subject with its own permissions, so a request naming,
    /// say, `hsync.receipts.batches` would make it write into the receipt log; requests
    /// whose reply subject is not an inbox are dropped instead.
    #[arg(long = "reply-prefixes", env = "HSYNC_REPLY_PREFIXES", value_delimiter = ',', default_values_t = default_reply_prefixes())]
    pub reply_prefixes: Vec<String>,
}

/// The NATS clients' inboxes (`_INBOX.`) and the replies the server maps across accounts
/// (`_R_.`).
pub fn default_reply_prefixes() -> Vec<String> {
    vec!["_INBOX.".to_string(), "_R_.".to_string()]
}

impl BusConfig {
    /// Defaults for a given URL (tests and the CLI).
    pub fn for_url(url: &str) -> Self {
        BusConfig {
            nats_url: url.to_string(),
            pool_size: 1,
            creds: None,
            user: None,
            password: None,
            prefix: hsync_protocol::names::DEFAULT_PREFIX.to_string(),
            request_timeout_ms: 10_000,
            connect_timeout_s: 30,
            compress_threshold: hsync_protocol::codec::DEFAULT_COMPRESS_THRESHOLD,
            max_decoded_bytes: hsync_protocol::codec::DEFAULT_MAX_DECODED_SIZE,
            pooling: true,
            reply_prefixes: default_reply_prefixes(),
        }
    }

    pub fn names(&self) -> Names {
        Names::new(&self.prefix)
    }

    pub fn codec(&self) -> Codec {
        Codec {
            compress_threshold: self.compress_threshold,
            max_decoded_size: self.max_decoded_bytes,
            ..Codec::default()
        }
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }
}
