//! Test support shared by every HyperSync crate's integration tests and the end-to-end tests.
//!
//! * [`NatsServer`] — a throwaway `nats-server` with JetStream enabled, listening on a free
//!   loopback port with its store in a temporary directory. It can be killed and restarted on
//!   the same port and store, which is what durability tests need.
//! * [`OtlpSink`] — an in-process OTLP/gRPC trace receiver. Point an exporter at
//!   [`OtlpSink::endpoint`] and inspect what arrived with [`OtlpSink::spans`] /
//!   [`OtlpSink::wait_for`].
//! * [`cluster::Cluster`] — nats-server, the five service binaries and an OTLP sink, all
//!   real processes, for end-to-end tests and benchmarks.
//!
//! The NATS and OTLP helpers are deliberately independent of the caller's tokio runtime flavour: the NATS
//! server is a child process, and the OTLP sink serves from its own thread and runtime, so a
//! test on a `current_thread` runtime can block (e.g. in a synchronous tracer-provider
//! shutdown) without starving the receiver.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod http;
mod nats;
mod otlp;
pub mod secured;

pub use nats::{free_port, NatsCluster, NatsServer};
pub use otlp::{CollectedSpan, OtlpSink};
