//! A blocking HTTP/1.0 GET for tests and the bench: nats-server's monitoring pages and
//! the services' `/metrics` and `/debug/...` pages.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context as _;

/// GETs `url` (`http://host:port/path`) and returns the status code and the body.
pub fn get(url: &str, timeout: Duration) -> anyhow::Result<(u16, Vec<u8>)> {
    let rest = url.strip_prefix("http://").with_context(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}"))).unwrap_or((rest, "/".to_string()));
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("{url}: bad host:port"))?
        .next()
        .with_context(|| format!("{url}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).with_context(|| format!("connecting to {authority}"))?;
    stream.set_read_timeout(Some(timeout))?;
    // HTTP/1.0: the server closes the connection after the reply, so read to the end.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).with_context(|| format!("reading {url}"))?;
    let end = reply.windows(4).position(|w| w == b"\r\n\r\n").with_context(|| format!("{url}: no HTTP header end"))?;
    let head = String::from_utf8_lossy(&reply[..end]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("{url}: no status in {:?}", head.lines().next().unwrap_or("")))?;
    Ok((status, reply[end + 4..].to_vec()))
}
