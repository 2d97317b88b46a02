//! The NATS layer every HyperSync process shares, written once:
//!
//! * [`Bus`] — a pool of connections (connected with retry and backoff), typed
//!   request/reply with timeouts, JetStream publishing, W3C trace context injected into
//!   every outgoing message.
//! * [`serve`] — runs a NATS micro endpoint: decodes requests, opens a span parented on
//!   the caller's trace context, calls the handler, encodes the reply in the caller's
//!   format and turns errors into error replies, with bounded concurrency.
//! * [`Shutdown`] — SIGTERM/SIGINT handling and graceful drain.
#![forbid(unsafe_code)]

mod bus;
mod config;
mod error;
mod serve;
mod shutdown;
pub mod streams;

pub use bus::Bus;
pub use config::BusConfig;
pub use error::BusError;
pub use serve::{serve, start_service, Incoming, ServeOptions};
pub use shutdown::{Shutdown, ShutdownSignal};

pub use async_nats;
