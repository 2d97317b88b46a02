//! Its own test binary: it sets `HSYNC_NATS_SERVER`, which would race with other tests
//! starting servers in the same process.

use hsync_testkit::NatsServer;

#[test]
fn missing_binary_is_a_clear_error() {
    std::env::set_var("HSYNC_NATS_SERVER", "/nonexistent/nats-server");
    let err = NatsServer::start().expect_err("must fail without a binary");
    std::env::remove_var("HSYNC_NATS_SERVER");
    let msg = format!("{err:#}");
    assert!(msg.contains("apt-get install nats-server"), "{msg}");
}
