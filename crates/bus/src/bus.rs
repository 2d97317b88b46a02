use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::client::RequestErrorKind;
use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use hsync_protocol::codec::{decode_error, headers};
use hsync_protocol::{Codec, Format, Names};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::config::BusConfig;
use crate::error::BusError;

/// How long [`Bus::js_publish`] keeps trying while a stream has no leader: JetStream
/// elects a new one within a few seconds of losing a node.
const JS_PUBLISH_RETRY: Duration = Duration::from_secs(15);

/// A pool of NATS connections plus the codec and names of this installation.
pub struct Bus {
    clients: Vec<Client>,
    next: AtomicUsize,
    names: Names,
    codec: Codec,
    request_timeout: Duration,
    reply_prefixes: Vec<String>,
}

impl Bus {
    /// Connects `pool_size` connections, retrying with backoff until the server answers
    /// or `connect_timeout_s` passes, so services may start before NATS does.
    pub async fn connect(cfg: &BusConfig, client_name: &str) -> anyhow::Result<Bus> {
        if !cfg.pooling {
            // Process-wide; only ever switched off (by a service's own configuration), so a
            // second connection with the default cannot switch it back on.
            hsync_protocol::pool::set_pooling(false);
        }
        let pool = cfg.pool_size.clamp(1, 64);
        let mut clients = Vec::with_capacity(pool);
        let deadline = Instant::now() + Duration::from_secs(cfg.connect_timeout_s);
        for i in 0..pool {
            clients.push(connect_one(cfg, &format!("{client_name}#{i}"), deadline).await?);
        }
        Ok(Bus {
            clients,
            next: AtomicUsize::new(0),
            names: cfg.names(),
            codec: cfg.codec(),
            request_timeout: cfg.request_timeout(),
            reply_prefixes: cfg.reply_prefixes.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        })
    }

    /// Whether a request's reply subject is one a service may answer on
    /// (`BusConfig::reply_prefixes`).
    pub fn reply_allowed(&self, reply: &str) -> bool {
        self.reply_prefixes.iter().any(|p| p == "*" || reply.starts_with(p.as_str()))
    }

    /// The next connection of the pool (round robin): many requests share each one.
    pub fn client(&self) -> &Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        &self.clients[i]
    }

    /// The connection used for subscriptions and services.
    pub fn primary(&self) -> &Client {
        &self.clients[0]
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub fn jetstream(&self) -> jetstream::Context {
        jetstream::new(self.primary().clone())
    }

    /// Encodes `msg` (MessagePack) and adds the current trace context.
    pub fn encode<T: Serialize>(&self, msg: &T) -> Result<(HeaderMap, Bytes), BusError> {
        let (mut h, body) = self.codec.encode(msg, Format::MsgPack)?;
        hsync_telemetry::propagation::inject_current(&mut h);
        Ok((h, body))
    }

    /// Typed request/reply with the default timeout.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: String,
        req: &Req,
    ) -> Result<Resp, BusError> {
        self.request_timeout_after(subject, req, self.request_timeout).await
    }

    /// [`Bus::request`] for requests that may be sent twice (policy checks, deterministic
    /// operators): a request lost with a NATS node or a service replica that died under it
    /// times out, and is sent once more; when no replica answers at all (one restarting),
    /// it is sent again after 100, 200, 400 ms.
    pub async fn request_idempotent<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: String,
        req: &Req,
    ) -> Result<Resp, BusError> {
        let (mut timeouts, mut no_responders) = (0, 0);
        loop {
            match self.request(subject.clone(), req).await {
                Err(BusError::Timeout { .. }) if timeouts < 1 => {
                    timeouts += 1;
                    tracing::warn!("no answer on {subject} in time; sending the request again");
                }
                Err(BusError::NoResponders(_)) if no_responders < 3 => {
                    tokio::time::sleep(Duration::from_millis(100 << no_responders)).await;
                    no_responders += 1;
                }
                r => return r,
            }
        }
    }

    /// Typed request/reply; an error reply becomes [`BusError::Remote`].
    pub async fn request_timeout_after<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        subject: String,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, BusError> {
        let span = tracing::info_span!(
            "send",
            otel.name = %format!("send {subject}"),
            otel.kind = "client",
            messaging.system = "nats",
            messaging.destination.name = %subject,
            messaging.operation.type = "send",
        );
        async {
            let (h, body) = self.encode(req)?;
            let request = async_nats::client::Request::new()
                .payload(body)
                .headers(h)
                .timeout(Some(timeout));
            let msg = self
                .client()
                .send_request(subject.clone(), request)
                .await
                .map_err(|e| match e.kind() {
                    RequestErrorKind::TimedOut => BusError::Timeout {
                        subject: subject.clone(),
                        millis: timeout.as_millis() as u64,
                    },
                    RequestErrorKind::NoResponders => BusError::NoResponders(subject.clone()),
                    _ => BusError::Nats(e.to_string()),
                })?;
            if let Some(err) = decode_error(msg.headers.as_ref(), &msg.payload) {
                return Err(BusError::Remote(err));
            }
            Ok(self.codec.decode(msg.headers.as_ref(), &msg.payload)?)
        }
        .instrument(span)
        .await
    }

    /// Core publish (fire and forget) with trace context.
    pub async fn publish<T: Serialize>(&self, subject: String, msg: &T) -> Result<(), BusError> {
        let (h, body) = self.encode(msg)?;
        self.client()
            .publish_with_headers(subject, h, body)
            .await
            .map_err(|e| BusError::Nats(e.to_string()))
    }

    /// JetStream publish that returns once the stream has stored the message.
    /// `msg_id` becomes `Nats-Msg-Id`, so a re-publish is de-duplicated.
    pub async fn js_publish<T: Serialize>(
        &self,
        js: &jetstream::Context,
        subject: String,
        msg: &T,
        msg_id: Option<&str>,
    ) -> Result<jetstream::publish::PublishAck, BusError> {
        let (mut h, body) = self.encode(msg)?;
        if let Some(id) = msg_id {
            h.insert(headers::NATS_MSG_ID, id);
        }
        // While a replicated stream elects a new leader (its node died) publishes find "no
        // stream"; a lost ack is harmless to repeat when the message id de-duplicates it.
        let deadline = Instant::now() + JS_PUBLISH_RETRY;
        let mut attempt = 0u64;
        loop {
            let ack = js
                .publish_with_headers(subject.clone(), h.clone(), body.clone())
                .await
                .map_err(|e| BusError::Nats(format!("publish to {subject}: {e}")))?;
            let err = match ack.await {
                Ok(ack) => return Ok(ack),
                Err(e) => e,
            };
            let transient = match err.kind() {
                jetstream::context::PublishErrorKind::StreamNotFound => true,
                jetstream::context::PublishErrorKind::TimedOut => msg_id.is_some(),
                _ => false,
            };
            if !transient || Instant::now() >= deadline {
                return Err(BusError::Nats(format!("no JetStream ack for {subject}: {err}")));
            }
            attempt += 1;
            tracing::warn!("no JetStream ack for {subject} ({err}); publishing again (attempt {attempt})");
            tokio::time::sleep(Duration::from_millis((100 * attempt).min(1000))).await;
        }
    }

    /// Flushes and drains every connection: nothing buffered is lost.
    pub async fn drain(&self) {
        for c in &self.clients {
            if let Err(e) = c.flush().await {
                tracing::warn!("flush before exit failed: {e}");
            }
            if let Err(e) = c.drain().await {
                tracing::debug!("drain: {e}");
            }
        }
    }
}

async fn connect_one(cfg: &BusConfig, name: &str, deadline: Instant) -> anyhow::Result<Client> {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut opts = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(5))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("NATS connection lost; reconnecting"),
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    other => tracing::debug!("NATS event: {other}"),
                }
            });
        if let Some(path) = &cfg.creds {
            opts = opts.credentials_file(path).await.map_err(|e| {
                anyhow::anyhow!("cannot read NATS credentials {}: {e}", path.display())
            })?;
        }
        if let (Some(u), Some(p)) = (&cfg.user, &cfg.password) {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        let urls: Vec<&str> = cfg.nats_url.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        match opts.connect(urls.as_slice()).await {
            Ok(c) => {
                if attempt > 1 {
                    tracing::info!("connected to NATS at {} after {attempt} attempts", cfg.nats_url);
                }
                return Ok(c);
            }
            Err(e) if Instant::now() + backoff < deadline => {
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!("NATS at {} not reachable yet ({e}); retrying", cfg.nats_url);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                anyhow::bail!(
                    "cannot connect to NATS at {} after {attempt} attempts: {e}",
                    cfg.nats_url
                )
            }
        }
    }
}
