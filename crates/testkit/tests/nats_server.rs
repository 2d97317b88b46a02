//! `NatsServer` against a real `nats-server`: JetStream works, the port closes on drop, and a
//! restart keeps the store.

use std::net::TcpStream;
use std::time::Duration;

use async_nats::jetstream;
use hsync_testkit::NatsServer;

async fn publish_n(url: &str, stream: &str, subject: &str, n: usize) {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.to_owned(),
        subjects: vec![subject.to_owned()],
        ..Default::default()
    })
    .await
    .expect("create stream (needs -js)");
    for i in 0..n {
        js.publish(subject.to_owned(), format!("msg-{i}").into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
}

async fn stream_messages(url: &str, stream: &str) -> u64 {
    let client = async_nats::connect(url).await.expect("connect");
    let js = jetstream::new(client);
    let info = js
        .get_stream(stream)
        .await
        .expect("get stream")
        .get_info()
        .await
        .expect("stream info");
    info.state.messages
}

#[tokio::test]
async fn jetstream_works_and_port_closes_on_drop() {
    let server = NatsServer::start().expect("start nats-server");
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));

    publish_n(&server.url(), "TK", "tk.>", 3).await;
    assert_eq!(stream_messages(&server.url(), "TK").await, 3);

    drop(server);
    let closed = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_err();
    assert!(closed, "port {port} still accepts connections after drop");
}

#[tokio::test]
async fn restart_keeps_stream_messages_and_port() {
    let mut server = NatsServer::start().expect("start nats-server");
    let port = server.port();
    publish_n(&server.url(), "DUR", "dur.x", 5).await;

    server.restart().expect("graceful restart");
    assert_eq!(server.port(), port);
    assert_eq!(stream_messages(&server.url(), "DUR").await, 5);

    // A crash (SIGKILL) followed by restart keeps acknowledged messages too.
    publish_n(&server.url(), "DUR", "dur.x", 2).await;
    server.kill();
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "killed server still listening"
    );
    server.restart().expect("restart after kill");
    assert_eq!(stream_messages(&server.url(), "DUR").await, 7);
}
