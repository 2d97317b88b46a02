//! The end-to-end tests' harness lives in `hsync-testkit` (`hsync bench` uses it too).

pub use hsync_testkit::cluster::{bin_dir, Cluster, SERVICE_BINARIES};
