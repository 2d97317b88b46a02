//! W3C trace-context propagation over NATS message headers.
//!
//! Producer side: inside the publishing span, [`inject_current`] into the message's
//! [`HeaderMap`]. Consumer side: create the processing span, then — **before entering it or
//! calling anything that reads its context** — [`set_parent_from_headers`]; once a span has
//! been started, `tracing-opentelemetry` no longer lets its parent change.
//!
//! All functions use the global propagator, which [`crate::init`] sets to W3C TraceContext;
//! without `init` they do nothing (the default global propagator is a no-op).

use std::str::FromStr as _;

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::Context;
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, SetParentError};

/// Writes `traceparent` (and `tracestate` if non-empty) for the current `tracing` span.
pub fn inject_current(headers: &mut HeaderMap) {
    inject_context(&tracing::Span::current().context(), headers);
}

/// Writes `traceparent`/`tracestate` for an explicit OpenTelemetry context.
pub fn inject_context(cx: &Context, headers: &mut HeaderMap) {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut NatsInjector(headers))
    });
}

/// The remote context carried by `headers`: a context holding the sender's span context, or an
/// empty context when there are no headers or no valid `traceparent`. It is *not* merged with
/// the caller's current context.
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) => opentelemetry::global::get_text_map_propagator(|p| {
            p.extract_with_context(&Context::new(), &NatsExtractor(headers))
        }),
        None => Context::new(),
    }
}

/// Makes the sender's span (from `headers`) the parent of `span`.
///
/// Without a valid remote context the span is left alone, so it keeps its ordinary `tracing`
/// parent (or becomes a root). Call it before the span is entered: a started span cannot be
/// re-parented, which is logged as a warning.
pub fn set_parent_from_headers(span: &tracing::Span, headers: Option<&HeaderMap>) {
    let cx = extract(headers);
    if !cx.span().span_context().is_valid() {
        return;
    }
    match span.set_parent(cx) {
        Ok(()) => {}
        Err(SetParentError::AlreadyStarted) => tracing::warn!(
            "set_parent_from_headers called on an already started span; its parent is unchanged"
        ),
        // Disabled span or no OpenTelemetry layer installed: nothing to link.
        Err(_) => {}
    }
}

struct NatsInjector<'a>(&'a mut HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The `&str` conversions of async-nats panic on invalid input; use the checked ones.
        if let (Ok(name), Ok(value)) = (HeaderName::from_str(key), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

struct NatsExtractor<'a>(&'a HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let exact = HeaderName::from_str(key).ok().and_then(|n| self.0.get(n));
        // NATS header names are case-sensitive; accept e.g. `Traceparent` from other stacks.
        exact
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
                    .and_then(|(_, values)| values.first())
            })
            .map(HeaderValue::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::propagation::TextMapPropagator as _;
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    // These use the propagator directly: the global one is only set by `init`, which unit
    // tests must not call (it installs process-wide state).
    #[test]
    fn headers_round_trip_through_the_carrier() {
        let sc = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let propagator = TraceContextPropagator::new();
        let mut headers = HeaderMap::new();
        propagator.inject_context(&cx, &mut NatsInjector(&mut headers));
        assert_eq!(
            headers.get("traceparent").map(HeaderValue::as_str),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );

        let back = propagator.extract_with_context(&Context::new(), &NatsExtractor(&headers));
        let back_span = back.span();
        let got = back_span.span_context();
        assert_eq!(got.trace_id(), sc.trace_id());
        assert_eq!(got.span_id(), sc.span_id());
        assert!(got.is_remote());
    }

    #[test]
    fn extractor_is_case_insensitive_and_lists_keys() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        let ex = NatsExtractor(&headers);
        assert!(ex.get("traceparent").is_some());
        assert_eq!(ex.keys(), vec!["Traceparent"]);
        assert_eq!(ex.get("tracestate"), None);
    }

    #[test]
    fn extract_without_headers_is_empty() {
        assert!(!extract(None).span().span_context().is_valid());
        assert!(!extract(Some(&HeaderMap::new()))
            .span()
            .span_context()
            .is_valid());
    }
}
