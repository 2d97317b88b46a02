//! The policy store's loading rules: fail closed on an invalid stored set, roll back a
//! rejected change, build once at start-up, follow changes — against a real nats-server.

use std::sync::Arc;
use std::time::Duration;

use hsync_bus::{streams, Bus, BusConfig};
use hsync_protocol::names::{POLICY_KEY_PREFIX, POLICY_SCHEMA_KEY};
use hsync_protocol::policy::{PolicyQuery, Stage};
use hsync_testkit::NatsServer;
use policy_evaluator::{load_and_follow, PolicyStore};

const PERMIT_ALL: &str = "permit(principal, action, resource);";
const NOT_CEDAR: &str = "permit(principal, action, resource"; // unbalanced

fn query(principal: &str) -> PolicyQuery {
    PolicyQuery {
        principal: principal.into(),
        stage: Stage::Pre,
        operator: "vec.norm".into(),
        capabilities: vec![],
        context: Default::default(),
    }
}

fn key(id: &str) -> String {
    format!("{POLICY_KEY_PREFIX}{id}")
}

fn loaded(store: &PolicyStore, entries: &[(&str, Option<&str>)]) {
    for (k, v) in entries {
        store.apply(k, v.map(str::to_string));
    }
    store.finish_loading();
}

#[test]
fn nothing_is_allowed_before_the_load_and_an_empty_store_permits() {
    let store = PolicyStore::default();
    let d = store.evaluate(&query("alice"));
    assert!(!d.allowed, "no decision before the stored policies are loaded");
    assert!(d.errors[0].contains("not loaded"), "{:?}", d.errors);
    store.finish_loading();
    assert!(store.evaluate(&query("alice")).allowed, "no policies stored: permit");
}

#[test]
fn an_invalid_stored_set_fails_closed_until_fixed() {
    let store = PolicyStore::default();
    loaded(&store, &[(&key("allow"), Some(PERMIT_ALL)), (&key("broken"), Some(NOT_CEDAR))]);
    let d = store.evaluate(&query("alice"));
    assert!(!d.allowed, "a broken stored set must not permit");
    assert!(d.errors.iter().any(|e| e.contains("broken")), "the reason names the policy: {:?}", d.errors);
    store.warm_up();
    assert_eq!(store.stats_json()["healthy"], false);
    assert_eq!(store.stats_json()["invalid_policies"], serde_json::json!(["broken"]));
    // Deleting the broken policy makes the set valid again.
    store.apply(&key("broken"), None);
    assert!(store.evaluate(&query("alice")).allowed);
    assert_eq!(store.stats_json()["healthy"], true);
}

#[test]
fn a_rejected_change_is_rolled_back_and_does_not_block_later_ones() {
    let store = PolicyStore::default();
    loaded(&store, &[(&key("allow"), Some(PERMIT_ALL))]);
    assert!(store.evaluate(&query("bob")).allowed);
    // A bad policy is rejected: the running set stays, and so do the texts.
    store.apply(&key("bad"), Some(NOT_CEDAR.into()));
    assert!(store.evaluate(&query("bob")).allowed);
    assert_eq!(store.stats_json()["policies"], 1);
    assert_eq!(store.stats_json()["rejected_changes"], 1);
    // A later good change applies (it used to fail while the bad text stayed stored).
    store.apply(&key("no-bob"), Some(r#"forbid(principal == Hsync::User::"bob", action, resource);"#.into()));
    assert!(!store.evaluate(&query("bob")).allowed);
    assert!(store.evaluate(&query("alice")).allowed);
    // A schema that the running policies do not satisfy is rejected too.
    store.apply(POLICY_SCHEMA_KEY, Some("this is not a schema".into()));
    assert!(store.evaluate(&query("alice")).allowed);
    assert_eq!(store.stats_json()["rejected_changes"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_builds_once_and_changes_are_followed() {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Arc::new(Bus::connect(&BusConfig::for_url(&nats.url()), "policy-loader-test").await.expect("connect"));
    let bucket = streams::policies_bucket(&bus.jetstream(), bus.names()).await.expect("bucket");
    for i in 0..200 {
        bucket
            .put(key(&format!("p{i}")), format!(r#"permit(principal == Hsync::User::"u{i}", action, resource);"#).into())
            .await
            .expect("put");
    }
    bucket.delete(key("p7")).await.expect("delete");

    let store = Arc::new(PolicyStore::default());
    load_and_follow(store.clone(), bucket.clone()).await.expect("load");
    let stats = store.stats_json();
    assert_eq!(stats["policies"], 199, "{stats}");
    assert_eq!(stats["reloads"], 1, "one build for the whole stored set: {stats}");
    assert!(store.evaluate(&query("u3")).allowed);
    assert!(!store.evaluate(&query("u7")).allowed, "a deleted policy is not loaded");

    // A change after loading reaches the running set.
    bucket.put(key("no-u3"), r#"forbid(principal == Hsync::User::"u3", action, resource);"#.into()).await.expect("put");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.evaluate(&query("u3")).allowed {
        assert!(tokio::time::Instant::now() < deadline, "the change was not followed within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.stats_json()["reloads"], 2);
}
