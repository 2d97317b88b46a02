//! The policy write path: list, show, store and delete Cedar policies and the schema in the
//! policy bucket, validated before anything is written, and wait until every
//! policy-evaluator replica has applied a write.
//!
//! The bucket holds one policy per key `policy.<id>` and the schema (Cedar's human-readable
//! syntax) under `schema`. The evaluators follow the bucket; a change that does not build
//! is rejected there and, worse, an invalid stored set makes a restarted evaluator deny
//! every step. So nothing reaches the bucket without passing the same validation the
//! evaluator does, and every write is a compare-and-swap on the revision that was
//! validated against.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use hsync_bus::{Bus, BusError};
use hsync_policy::{PolicyEngine, MAX_POLICY_BYTES};
use hsync_protocol::names::{services, POLICY_KEY_PREFIX, POLICY_SCHEMA_KEY};
use hsync_protocol::policy::{PolicyDecision, PolicyQuery};
use hsync_protocol::{ErrorCode, ErrorReply};

use crate::{discovery, PolicyClient};

/// Longest policy id.
pub const MAX_POLICY_ID: usize = 128;

/// Largest accepted schema text. Real schemas are a few KiB; every evaluator parses the
/// schema again on each change to the bucket, so its size is bounded.
pub const MAX_SCHEMA_BYTES: usize = 1024 * 1024;

/// Writes that lose a compare-and-swap to a concurrent writer are re-read, re-validated
/// and tried again this many times in all.
const WRITE_ATTEMPTS: usize = 5;

/// How long one `$SRV.STATS` round gathers the evaluators' answers: there is no telling
/// how many replicas run, so each round waits this long for stragglers.
const STATS_WINDOW: Duration = Duration::from_millis(250);

use crate::invalid_argument as invalid;

/// A failed compare-and-swap. The protocol has no conflict code; INVALID_ARGUMENT is the
/// closest: the caller's expected revision does not hold.
fn conflict(msg: String) -> BusError {
    invalid(msg)
}

fn nats(msg: String) -> BusError {
    BusError::Nats(msg)
}

/// An id as shown in messages: quoted (control characters visible) and bounded, since
/// a rejected id can be arbitrarily long.
fn shown(id: &str) -> String {
    const SHOWN: usize = 48;
    if id.chars().count() <= SHOWN {
        format!("{id:?}")
    } else {
        let head: String = id.chars().take(SHOWN).collect();
        format!("{head:?}…")
    }
}

/// Checks a policy id: 1-128 ASCII letters, digits, '-' or '_'. No dots: an id is one
/// token of the key `policy.<id>`. The error says what is wrong.
pub fn valid_policy_id(id: &str) -> Result<(), BusError> {
    if id.is_empty() {
        return Err(invalid("a policy id cannot be empty".into()));
    }
    if id.len() > MAX_POLICY_ID {
        return Err(invalid(format!(
            "policy id {} is {} bytes long; the limit is {MAX_POLICY_ID}",
            shown(id),
            id.len()
        )));
    }
    if let Some((at, c)) = id
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        let why = if c == '.' {
            "dots are not allowed (an id is a single key token)".to_string()
        } else {
            format!("{c:?} at byte {at} is not allowed")
        };
        return Err(invalid(format!(
            "policy id {} is invalid: {why}; use ASCII letters, digits, '-' and '_'",
            shown(id)
        )));
    }
    Ok(())
}

fn policy_key(id: &str) -> String {
    format!("{POLICY_KEY_PREFIX}{id}")
}

/// What a key held when read, for the compare-and-swap that follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Last {
    /// Never written (or purged away).
    Absent,
    /// Deleted at this revision (a delete marker is an entry of its own).
    Deleted(u64),
    /// Holds a value written at this revision.
    Live(u64),
}

impl Last {
    /// The revision of the live value, 0 when there is none (`--if-revision 0` means
    /// "only if absent").
    fn live_revision(self) -> u64 {
        match self {
            Last::Live(r) => r,
            Last::Absent | Last::Deleted(_) => 0,
        }
    }
}

/// A key's value (when live) and what the next compare-and-swap must expect.
struct Read {
    text: Option<String>,
    last: Last,
}

enum WriteError {
    /// Someone else wrote the key since it was read.
    Conflict,
    Other(BusError),
}

/// The policy bucket as an administrator sees it.
#[derive(Clone)]
pub struct PolicyAdmin {
    bus: Arc<Bus>,
}

impl PolicyAdmin {
    pub fn new(bus: Arc<Bus>) -> Self {
        PolicyAdmin { bus }
    }

    /// Opens the bucket for reading; reading never creates it.
    async fn bucket(&self) -> Result<kv::Store, BusError> {
        let name = self.bus.names().bucket_policies();
        self.bus.jetstream().get_key_value(&name).await.map_err(|e| {
            nats(format!(
                "cannot open the policy bucket {name}: {e}; is a policy-evaluator running (it creates the bucket)?"
            ))
        })
    }

    /// Opens the bucket for writing, creating it if need be: policies may be stored before
    /// any evaluator has started.
    async fn bucket_for_writing(&self) -> Result<kv::Store, BusError> {
        hsync_bus::streams::policies_bucket(&self.bus.jetstream(), self.bus.names())
            .await
            .map_err(|e| nats(format!("{e:#}")))
    }

    async fn read(&self, kv: &kv::Store, key: &str) -> Result<Read, BusError> {
        let entry = kv
            .entry(key)
            .await
            .map_err(|e| nats(format!("cannot read `{key}` from the policy bucket: {e}")))?;
        Ok(match entry {
            None => Read { text: None, last: Last::Absent },
            Some(e) => match e.operation {
                kv::Operation::Put => Read {
                    text: Some(String::from_utf8_lossy(&e.value).into_owned()),
                    last: Last::Live(e.revision),
                },
                kv::Operation::Delete | kv::Operation::Purge => Read {
                    text: None,
                    last: Last::Deleted(e.revision),
                },
            },
        })
    }

    /// Writes `key` only if it still is as read (`last`).
    async fn write(&self, kv: &kv::Store, key: &str, value: &str, last: Last) -> Result<u64, WriteError> {
        match last {
            Last::Absent => kv.create(key, value.to_owned().into()).await.map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => WriteError::Conflict,
                _ => WriteError::Other(nats(format!("cannot write `{key}` to the policy bucket: {e}"))),
            }),
            Last::Deleted(r) | Last::Live(r) => kv.update(key, value.to_owned().into(), r).await.map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => WriteError::Conflict,
                _ => WriteError::Other(nats(format!("cannot write `{key}` to the policy bucket: {e}"))),
            }),
        }
    }

    /// Every stored policy id with the revision of its text, sorted by id.
    pub async fn list(&self) -> Result<Vec<(String, u64)>, BusError> {
        let kv = self.bucket().await?;
        Ok(self.read_all(&kv).await?.into_iter().map(|(id, (_, rev))| (id, rev)).collect())
    }

    /// Every stored policy: id → (text, revision).
    async fn read_all(&self, kv: &kv::Store) -> Result<BTreeMap<String, (String, u64)>, BusError> {
        let mut keys = kv
            .keys()
            .await
            .map_err(|e| nats(format!("cannot list the policy bucket: {e}")))?;
        let mut out = BTreeMap::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| nats(format!("cannot list the policy bucket: {e}")))?;
            let Some(id) = key.strip_prefix(POLICY_KEY_PREFIX) else { continue };
            // Deleted between listing and reading: not there any more.
            if let Read { text: Some(text), last: Last::Live(rev) } = self.read(kv, &key).await? {
                out.insert(id.to_string(), (text, rev));
            }
        }
        Ok(out)
    }

    /// One policy's text and revision.
    pub async fn get(&self, id: &str) -> Result<Option<(String, u64)>, BusError> {
        valid_policy_id(id)?;
        let kv = self.bucket().await?;
        Ok(live(self.read(&kv, &policy_key(id)).await?))
    }

    /// The stored schema's text and revision.
    pub async fn get_schema(&self) -> Result<Option<(String, u64)>, BusError> {
        let kv = self.bucket().await?;
        Ok(live(self.read(&kv, POLICY_SCHEMA_KEY).await?))
    }

    /// Stores (or replaces) policy `id` and returns the revision written. The text must be
    /// one static Cedar policy and, when a schema is stored, validate strictly against it;
    /// otherwise nothing is written and the error carries Cedar's diagnostics.
    ///
    /// With `expected_revision`, the policy is written only if its current revision is
    /// that (0: only if it does not exist). Without, a concurrent write to the same id
    /// makes this one re-read and try again, so neither is lost unseen to validation.
    pub async fn put(&self, id: &str, text: &str, expected_revision: Option<u64>) -> Result<u64, BusError> {
        valid_policy_id(id)?;
        if text.len() > MAX_POLICY_BYTES {
            return Err(invalid(format!(
                "policy {id} is {} bytes; the limit is {MAX_POLICY_BYTES}",
                text.len()
            )));
        }
        let kv = self.bucket_for_writing().await?;
        let key = policy_key(id);
        // Re-validated only when the schema changes between attempts: the verdict depends
        // on the schema, not on the policy text being replaced.
        let mut validated_against: Option<Last> = None;
        for _ in 0..WRITE_ATTEMPTS {
            let schema = self.read(&kv, POLICY_SCHEMA_KEY).await?;
            if validated_against != Some(schema.last) {
                validate(id, text, schema.text.as_deref())?;
                validated_against = Some(schema.last);
            }
            let current = self.read(&kv, &key).await?;
            check_expected(&key, expected_revision, current.last)?;
            match self.write(&kv, &key, text, current.last).await {
                Ok(revision) => {
                    self.recheck_policy(&kv, id, text, revision, schema.last, &current).await?;
                    return Ok(revision);
                }
                Err(WriteError::Conflict) if expected_revision.is_none() => continue,
                Err(WriteError::Conflict) => return Err(lost_race(&key, expected_revision)),
                Err(WriteError::Other(e)) => return Err(e),
            }
        }
        Err(contended(&key))
    }

    /// A schema written between validating the policy and writing it was validated without
    /// this policy, so the stored set may now be invalid. If that schema came first (the
    /// evaluators apply writes in revision order), check the policy against it and, if it
    /// fails, put back what the key held: an invalid stored set would make every evaluator
    /// that restarts deny everything. A schema written after this policy is its own
    /// writer's to check.
    async fn recheck_policy(
        &self,
        kv: &kv::Store,
        id: &str,
        text: &str,
        revision: u64,
        schema_seen: Last,
        before: &Read,
    ) -> Result<(), BusError> {
        let schema = self.read(kv, POLICY_SCHEMA_KEY).await?;
        let changed_before_us = schema.last != schema_seen
            && matches!(schema.last, Last::Deleted(r) | Last::Live(r) if r < revision);
        if !changed_before_us {
            return Ok(());
        }
        let Err(e) = validate(id, text, schema.text.as_deref()) else {
            return Ok(());
        };
        let undone = self.undo(kv, &policy_key(id), revision, before).await;
        Err(conflict(format!(
            "the schema changed while policy {id} was being written, and the policy does not validate against the new schema: {}; {undone}",
            e.to_reply().message
        )))
    }

    /// Restores what `key` held before our write at `revision`, unless it changed again.
    async fn undo(&self, kv: &kv::Store, key: &str, revision: u64, before: &Read) -> String {
        let restored = match &before.text {
            Some(old) => kv.update(key, old.clone().into(), revision).await.map(|_| ()),
            None => kv.delete_expect_revision(key, Some(revision)).await,
        };
        match restored {
            Ok(()) => format!("`{key}` was restored to what it held before"),
            Err(e) => format!("`{key}` could not be restored ({e}): fix it now"),
        }
    }

    /// Stores (or replaces) the schema and returns the revision written. The schema must
    /// parse, declare what the request mapping needs, and every stored policy must
    /// validate against it; otherwise nothing is written and the error names the first
    /// policy that fails, with Cedar's diagnostics. `expected_revision` as for [`put`].
    ///
    /// [`put`]: PolicyAdmin::put
    pub async fn put_schema(&self, text: &str, expected_revision: Option<u64>) -> Result<u64, BusError> {
        if text.len() > MAX_SCHEMA_BYTES {
            return Err(invalid(format!(
                "the schema is {} bytes; the limit is {MAX_SCHEMA_BYTES}",
                text.len()
            )));
        }
        let kv = self.bucket_for_writing().await?;
        for _ in 0..WRITE_ATTEMPTS {
            let policies = self.read_all(&kv).await?;
            validate_set(&policies, text)?;
            let current = self.read(&kv, POLICY_SCHEMA_KEY).await?;
            check_expected(POLICY_SCHEMA_KEY, expected_revision, current.last)?;
            match self.write(&kv, POLICY_SCHEMA_KEY, text, current.last).await {
                Ok(revision) => {
                    self.recheck_schema(&kv, text, revision, &policies, &current).await?;
                    return Ok(revision);
                }
                Err(WriteError::Conflict) if expected_revision.is_none() => continue,
                Err(WriteError::Conflict) => return Err(lost_race(POLICY_SCHEMA_KEY, expected_revision)),
                Err(WriteError::Other(e)) => return Err(e),
            }
        }
        Err(contended(POLICY_SCHEMA_KEY))
    }

    /// The mirror of [`PolicyAdmin::recheck_policy`]: policies written between reading the
    /// stored set and writing the schema were not validated against it. Those that came
    /// before the schema are checked now; if the set fails, the previous schema is put back.
    async fn recheck_schema(
        &self,
        kv: &kv::Store,
        text: &str,
        revision: u64,
        validated: &BTreeMap<String, (String, u64)>,
        before: &Read,
    ) -> Result<(), BusError> {
        let now = self.read_all(kv).await?;
        let changed = now.iter().any(|(id, (_, rev))| *rev < revision && validated.get(id).map(|v| v.1) != Some(*rev));
        if !changed {
            return Ok(());
        }
        let earlier: BTreeMap<String, (String, u64)> =
            now.into_iter().filter(|(_, (_, rev))| *rev < revision).collect();
        let Err(e) = validate_set(&earlier, text) else { return Ok(()) };
        let undone = self.undo(kv, POLICY_SCHEMA_KEY, revision, before).await;
        Err(conflict(format!(
            "a policy changed while the schema was being written: {}; {undone}",
            e.to_reply().message
        )))
    }

    /// Deletes policy `id` and returns the revision of the deletion. NOT_FOUND when there
    /// is no such policy; with `expected_revision`, only if the policy is at that revision.
    pub async fn delete(&self, id: &str, expected_revision: Option<u64>) -> Result<u64, BusError> {
        valid_policy_id(id)?;
        let kv = self.bucket().await?;
        let key = policy_key(id);
        let current = self.read(&kv, &key).await?;
        let Last::Live(rev) = current.last else {
            return Err(BusError::Remote(ErrorReply::new(
                ErrorCode::NotFound,
                format!("there is no policy {id}"),
            )));
        };
        check_expected(&key, expected_revision, current.last)?;
        // Deleting whatever the id holds is the intent, unless the caller pinned a revision.
        let pinned = expected_revision.map(|_| rev);
        kv.delete_expect_revision(&key, pinned).await.map_err(|e| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => lost_race(&key, expected_revision),
            _ => nats(format!("cannot delete `{key}` from the policy bucket: {e}")),
        })?;
        // The client does not return the delete marker's revision; read it back. A later
        // write to the key makes this larger, which only makes a wait for it stricter.
        match self.read(&kv, &key).await?.last {
            Last::Deleted(r) | Last::Live(r) => Ok(r),
            Last::Absent => Ok(rev),
        }
    }

    /// Waits until every policy-evaluator replica reports it has applied `revision`
    /// (`applied_revision` in its `$SRV.STATS`) and returns how many replicas answered;
    /// 0 when none did (the write is stored, and takes effect when an evaluator starts).
    /// Fails naming the replicas still behind after `timeout`.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<usize, BusError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let window = STATS_WINDOW.min(timeout).max(Duration::from_millis(20));
        let mut pause = Duration::from_millis(10);
        let mut ever_answered = false;
        loop {
            let answers = discovery::collect(self.bus.primary(), "STATS", services::POLICY_EVALUATOR, window)
                .await
                .map_err(|e| nats(format!("cannot ask the policy-evaluators for their stats: {e:#}")))?;
            let mut replicas = HashSet::new();
            let mut behind = Vec::new();
            for a in &answers {
                let id = a["id"].as_str().unwrap_or("?").to_string();
                if !replicas.insert(id.clone()) {
                    continue;
                }
                if let Some(why) = rejection_of(a, revision) {
                    return Err(BusError::Remote(ErrorReply::new(
                        ErrorCode::InvalidArgument,
                        format!("policy-evaluator replica {id} rejected revision {revision} and keeps its running set: {why}"),
                    )));
                }
                match applied_revision(a) {
                    Some(r) if r >= revision => {}
                    Some(r) => behind.push(format!("{id} (at revision {r})")),
                    None => {
                        return Err(BusError::Remote(ErrorReply::new(
                            ErrorCode::Unavailable,
                            format!(
                                "policy-evaluator replica {id} does not report applied_revision (an older version?): \
                                 cannot tell whether it applied revision {revision}"
                            ),
                        )))
                    }
                }
            }
            if replicas.is_empty() && !ever_answered {
                return Ok(0);
            }
            ever_answered = true;
            if behind.is_empty() && !replicas.is_empty() {
                return Ok(replicas.len());
            }
            if tokio::time::Instant::now() + pause + window > deadline {
                let who = if behind.is_empty() {
                    "no policy-evaluator replica answers any more".to_string()
                } else {
                    format!("policy-evaluator replica(s) {} have not", behind.join(", "))
                };
                return Err(BusError::Remote(ErrorReply::new(
                    ErrorCode::Timeout,
                    format!("{who} applied revision {revision} after {} ms", timeout.as_millis()),
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Asks the policy-evaluators what they decide for one query, as the runner would.
    pub async fn test(&self, query: PolicyQuery) -> Result<PolicyDecision, BusError> {
        let mut decisions = PolicyClient::new(self.bus.clone()).evaluate(vec![query]).await?;
        decisions
            .pop()
            .ok_or_else(|| BusError::Remote(ErrorReply::new(ErrorCode::Internal, "policy-evaluator sent no decision")))
    }
}

fn live(read: Read) -> Option<(String, u64)> {
    match (read.text, read.last) {
        (Some(text), Last::Live(rev)) => Some((text, rev)),
        _ => None,
    }
}

fn validate(id: &str, text: &str, schema: Option<&str>) -> Result<(), BusError> {
    hsync_policy::validate_policy(id, text, schema).map_err(|e| invalid(e.to_string()))
}

fn validate_set(policies: &BTreeMap<String, (String, u64)>, schema: &str) -> Result<(), BusError> {
    let pairs = policies.iter().map(|(id, (text, _))| (id.clone(), text.clone()));
    PolicyEngine::new(pairs, Some(schema))
        .map(drop)
        .map_err(|e| invalid(format!("the schema is rejected: {e}")))
}

fn check_expected(key: &str, expected: Option<u64>, last: Last) -> Result<(), BusError> {
    match expected {
        Some(want) if want != last.live_revision() => Err(conflict(format!(
            "`{key}` is at revision {}, not {want}{}",
            last.live_revision(),
            if last.live_revision() == 0 { " (it does not exist)" } else { "" }
        ))),
        _ => Ok(()),
    }
}

fn lost_race(key: &str, expected: Option<u64>) -> BusError {
    conflict(format!(
        "`{key}` was changed by someone else while being written (expected revision {})",
        expected.unwrap_or_default()
    ))
}

fn contended(key: &str) -> BusError {
    BusError::Remote(ErrorReply::new(
        ErrorCode::Overloaded,
        format!("`{key}` kept changing under {WRITE_ATTEMPTS} write attempts; try again"),
    ))
}

/// The error a replica gave when it rejected `revision` (`last_rejected` in its stats).
fn rejection_of(stats: &serde_json::Value, revision: u64) -> Option<String> {
    stats["endpoints"].as_array()?.iter().find_map(|ep| {
        let r = &ep["data"]["last_rejected"];
        (r["revision"].as_u64() == Some(revision)).then(|| r["error"].as_str().unwrap_or("no reason given").to_string())
    })
}

/// A replica's `applied_revision`, from the data of whichever endpoint carries it.
fn applied_revision(stats: &serde_json::Value) -> Option<u64> {
    stats["endpoints"]
        .as_array()?
        .iter()
        .filter_map(|ep| ep["data"]["applied_revision"].as_u64())
        .max()
}
