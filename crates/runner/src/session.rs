//! Job sessions: a job run with `keep_session` stays in memory — its nodes, their
//! operators, their outputs and an incremental topological order — so that
//! `hsync.jobs.extend` can add nodes to it and run only what is new.
//!
//! [`Session::extend`] validates an extension completely (ids, operators' arguments,
//! references, cycles through [`IncrementalOrder::add_edge`] on a copy of the order)
//! before it changes anything: a refused extension leaves the session as it was.
//! [`SessionStore`] bounds memory: at most `max_sessions` sessions (least recently used
//! evicted) and an idle TTL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hsync_protocol::job::{valid_id, Job, Node, MAX_ID_LEN};
use hsync_protocol::operator::OperatorDef;
use hsync_protocol::{ErrorCode, ErrorReply, Value};

use crate::dag::{self, MAX_NODES};
use crate::incremental::{IncrementalOrder, OrderError};

/// Session settings (flags or environment).
#[derive(clap::Args, Clone, Debug)]
pub struct SessionConfig {
    /// Most job sessions (`keep_session`) kept at once; the least recently used is
    /// evicted. 0 keeps none.
    #[arg(long = "max-sessions", env = "HSYNC_MAX_SESSIONS", default_value_t = 1000)]
    pub max_sessions: usize,
    /// A session not used for this many seconds is dropped.
    #[arg(long = "session-ttl-s", env = "HSYNC_SESSION_TTL_S", default_value_t = 600)]
    pub session_ttl_s: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_sessions: 1000,
            session_ttl_s: 600,
        }
    }
}

fn invalid_job(msg: impl Into<String>) -> ErrorReply {
    ErrorReply::new(ErrorCode::InvalidJob, msg)
}

/// One job's nodes and what is known of them.
#[derive(Debug)]
pub struct Session {
    /// Every node so far (the original job's, then each extension's, in order).
    job: Job,
    defs: Vec<Arc<OperatorDef>>,
    /// For each node, the nodes it references (deduplicated).
    deps: Vec<Vec<usize>>,
    index: HashMap<String, usize>,
    /// The output of each node that has one.
    outputs: Vec<Option<Value>>,
    order: IncrementalOrder,
}

impl Session {
    /// A session from a validated job: `defs` and `deps` as planned, `outputs` as run.
    pub fn new(
        mut job: Job,
        defs: Vec<Arc<OperatorDef>>,
        deps: Vec<Vec<usize>>,
        outputs: Vec<Option<Value>>,
    ) -> Result<Self, ErrorReply> {
        let n = job.nodes.len();
        assert_eq!(defs.len(), n, "one definition per node");
        assert_eq!(deps.len(), n, "one dependency list per node");
        assert_eq!(outputs.len(), n, "one output slot per node");
        job.outputs.clear();
        let index = job.nodes.iter().enumerate().map(|(i, node)| (node.id.clone(), i)).collect();
        let mut order = IncrementalOrder::with_capacity(n);
        for _ in 0..n {
            order.add_node();
        }
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                order
                    .add_edge(d, i)
                    .map_err(|e| ErrorReply::new(ErrorCode::Internal, format!("a planned job has a cycle: {e}")))?;
            }
        }
        Ok(Session {
            job,
            defs,
            deps,
            index,
            outputs,
            order,
        })
    }

    /// All nodes so far, with the original job's id, submitter and settings.
    pub fn job(&self) -> &Job {
        &self.job
    }

    pub fn defs(&self) -> &[Arc<OperatorDef>] {
        &self.defs
    }

    pub fn outputs(&self) -> &[Option<Value>] {
        &self.outputs
    }

    pub fn len(&self) -> usize {
        self.job.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.job.nodes.is_empty()
    }

    /// The nodes in a topological order (dependencies first).
    pub fn order(&self) -> &[usize] {
        self.order.as_slice()
    }

    fn id(&self, new: &[Node], i: usize) -> String {
        let old = self.job.nodes.len();
        if i < old {
            self.job.nodes[i].id.clone()
        } else {
            new[i - old].id.clone()
        }
    }

    /// Adds `nodes` (with their operators' definitions, `defs[k]` for `nodes[k]`) and
    /// returns the plan of what must run for `outputs` (empty: the new sinks): the
    /// needed nodes that have no output yet. Everything is checked before anything
    /// changes: on an error the session is exactly as before.
    pub fn extend(
        &mut self,
        nodes: Vec<Node>,
        defs: Vec<Arc<OperatorDef>>,
        outputs: Vec<String>,
    ) -> Result<dag::Plan, ErrorReply> {
        assert_eq!(defs.len(), nodes.len(), "one definition per node");
        let job_id = self.job.job_id.clone();
        if nodes.is_empty() {
            return Err(invalid_job(format!("the extension of job {job_id} has no nodes")));
        }
        let old = self.job.nodes.len();
        if old + nodes.len() > MAX_NODES {
            return Err(invalid_job(format!(
                "job {job_id} would have {} nodes; the limit is {MAX_NODES}",
                old + nodes.len()
            )));
        }
        let mut new_index: HashMap<&str, usize> = HashMap::with_capacity(nodes.len());
        for (k, node) in nodes.iter().enumerate() {
            if !valid_id(&node.id) {
                return Err(invalid_job(format!(
                    "node id {:?} is invalid: use 1-{MAX_ID_LEN} letters, digits, '-' or '_'",
                    node.id
                ))
                .at_node(&node.id));
            }
            if self.index.contains_key(&node.id) {
                return Err(invalid_job(format!("node id `{}` already exists in job {job_id}", node.id)).at_node(&node.id));
            }
            if new_index.insert(&node.id, old + k).is_some() {
                return Err(invalid_job(format!("node id `{}` appears twice in the extension", node.id)).at_node(&node.id));
            }
        }
        let missing = format!("not a node of job {job_id}");
        let lookup = |id: &str| self.index.get(id).copied().or_else(|| new_index.get(id).copied());
        let mut new_deps = Vec::with_capacity(nodes.len());
        for (node, def) in nodes.iter().zip(&defs) {
            new_deps.push(dag::check_node(node, def, lookup, &missing)?);
        }

        // Cycles are refused edge by edge, on a copy of the order: the session's own
        // order changes only once everything has passed.
        let mut order = self.order.clone();
        order.reserve(nodes.len());
        for _ in &nodes {
            order.add_node();
        }
        for (k, ds) in new_deps.iter().enumerate() {
            for &d in ds {
                if let Err(e) = order.add_edge(d, old + k) {
                    return Err(match e {
                        OrderError::Cycle(c) => {
                            // `c.nodes` is the path from `old + k` to `d`; the edge
                            // `d -> old + k` would close it.
                            let mut names: Vec<String> = c.nodes.iter().map(|&i| self.id(&nodes, i)).collect();
                            names.push(self.id(&nodes, old + k));
                            ErrorReply::new(
                                ErrorCode::Cycle,
                                format!(
                                    "node `{}` references `{}`, which closes a cycle: {}",
                                    nodes[k].id,
                                    self.id(&nodes, d),
                                    names.join(" -> ")
                                ),
                            )
                            .at_node(&nodes[k].id)
                        }
                        other => ErrorReply::new(ErrorCode::Internal, format!("incremental order: {other}")),
                    });
                }
            }
        }

        let outputs: Vec<String> = if outputs.is_empty() {
            let mut referenced = vec![false; nodes.len()];
            for &d in new_deps.iter().flatten() {
                if d >= old {
                    referenced[d - old] = true;
                }
            }
            nodes
                .iter()
                .enumerate()
                .filter(|(k, _)| !referenced[*k])
                .map(|(_, n)| n.id.clone())
                .collect()
        } else {
            for o in &outputs {
                if lookup(o).is_none() {
                    return Err(invalid_job(format!("requested output `{o}` is not a node of job {job_id}")));
                }
            }
            outputs
        };

        // Commit.
        drop(new_index);
        self.order = order;
        for (k, node) in nodes.iter().enumerate() {
            self.index.insert(node.id.clone(), old + k);
        }
        self.job.nodes.extend(nodes);
        self.defs.extend(defs);
        self.deps.extend(new_deps);
        self.outputs.resize(self.job.nodes.len(), None);
        Ok(self.plan_for(outputs))
    }

    /// The nodes `outputs` need that have no output yet, in topological order.
    fn plan_for(&self, outputs: Vec<String>) -> dag::Plan {
        let n = self.job.nodes.len();
        let mut needed = vec![false; n];
        let mut visited = vec![false; n];
        let mut stack: Vec<usize> = outputs.iter().filter_map(|o| self.index.get(o).copied()).collect();
        while let Some(i) = stack.pop() {
            if visited[i] {
                continue;
            }
            visited[i] = true;
            if self.outputs[i].is_some() {
                continue; // known: reused, and so is everything it was computed from
            }
            needed[i] = true;
            stack.extend(self.deps[i].iter().copied());
        }
        let order = self.order.as_slice().iter().copied().filter(|&i| needed[i]).collect();
        dag::Plan {
            order,
            deps: self.deps.clone(),
            outputs,
            needed,
        }
    }

    /// Keeps the outputs produced by a run (`produced[i]` for node `i`, when it has one).
    pub fn record(&mut self, produced: Vec<Option<Value>>) {
        for (slot, v) in self.outputs.iter_mut().zip(produced) {
            if v.is_some() {
                *slot = v;
            }
        }
    }
}

struct Entry {
    session: Arc<tokio::sync::Mutex<Session>>,
    last_used: Instant,
    /// Recency: larger is more recent (ties of `Instant` broken).
    tick: u64,
}

/// The runner's sessions, by job id.
pub struct SessionStore {
    cfg: SessionConfig,
    inner: Mutex<(HashMap<String, Entry>, u64)>,
    evictions: AtomicU64,
}

impl SessionStore {
    pub fn new(cfg: SessionConfig) -> Self {
        SessionStore {
            cfg,
            inner: Mutex::new((HashMap::new(), 0)),
            evictions: AtomicU64::new(0),
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.session_ttl_s)
    }

    /// Keeps (or replaces) the session of `job_id`.
    pub fn insert(&self, job_id: &str, session: Session) {
        self.insert_at(job_id, session, Instant::now())
    }

    /// The session of `job_id`, if it exists and has not expired; marks it used.
    pub fn get(&self, job_id: &str) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        self.get_at(job_id, Instant::now())
    }

    /// Sessions held (expired ones included until the next insert or look-up).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("session store").0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions dropped for room or for idleness.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    fn insert_at(&self, job_id: &str, session: Session, now: Instant) {
        if self.cfg.max_sessions == 0 {
            return;
        }
        let ttl = self.ttl();
        let mut guard = self.inner.lock().expect("session store");
        let (map, tick) = &mut *guard;
        let before = map.len();
        map.retain(|id, e| id == job_id || now.saturating_duration_since(e.last_used) < ttl);
        let mut evicted = (before - map.len()) as u64;
        if !map.contains_key(job_id) {
            while map.len() >= self.cfg.max_sessions {
                let Some(lru) = map.iter().min_by_key(|(_, e)| e.tick).map(|(id, _)| id.clone()) else {
                    break;
                };
                map.remove(&lru);
                evicted += 1;
            }
        }
        *tick += 1;
        map.insert(
            job_id.to_string(),
            Entry {
                session: Arc::new(tokio::sync::Mutex::new(session)),
                last_used: now,
                tick: *tick,
            },
        );
        self.evictions.fetch_add(evicted, Ordering::Relaxed);
    }

    fn get_at(&self, job_id: &str, now: Instant) -> Option<Arc<tokio::sync::Mutex<Session>>> {
        let ttl = self.ttl();
        let mut guard = self.inner.lock().expect("session store");
        let (map, tick) = &mut *guard;
        let expired = now.saturating_duration_since(map.get(job_id)?.last_used) >= ttl;
        if expired {
            map.remove(job_id);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *tick += 1;
        let e = map.get_mut(job_id)?;
        e.last_used = now;
        e.tick = *tick;
        Some(e.session.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsync_protocol::Arg;

    use crate::dag::tests::node;

    fn defs(nodes: &[Node]) -> Vec<Arc<OperatorDef>> {
        nodes
            .iter()
            .map(|n| Arc::new(hsync_operators::find(&n.op).unwrap().def.clone()))
            .collect()
    }

    fn lit(x: f64) -> Arg {
        Arg::Lit(Value::Float(x))
    }

    fn job(job_id: &str, nodes: Vec<Node>) -> Job {
        Job {
            job_id: job_id.into(),
            submitter: "t".into(),
            nodes,
            outputs: vec![],
            wait_receipts: false,
            timeout_ms: None,
            keep_session: true,
        }
    }

    /// `a` (const 1) → `b` (const of a); both with outputs.
    fn session(job_id: &str) -> Session {
        let nodes = vec![
            node("a", "const", &[("value", lit(1.0))]),
            node("b", "const", &[("value", Arg::reference("a"))]),
        ];
        let d = defs(&nodes);
        Session::new(job(job_id, nodes), d, vec![vec![], vec![0]], vec![Some(Value::Float(1.0)); 2]).unwrap()
    }

    fn extend(s: &mut Session, nodes: Vec<Node>, outputs: &[&str]) -> Result<dag::Plan, ErrorReply> {
        let d = defs(&nodes);
        s.extend(nodes, d, outputs.iter().map(|o| o.to_string()).collect())
    }

    fn ids(s: &Session, p: &dag::Plan) -> Vec<String> {
        p.order.iter().map(|&i| s.job().nodes[i].id.clone()).collect()
    }

    type Snapshot = (Vec<Node>, Vec<Vec<usize>>, Vec<Option<Value>>, Vec<usize>, usize);

    /// Everything observable of a session, to check that a refused extension changed nothing.
    fn snapshot(s: &Session) -> Snapshot {
        (s.job.nodes.clone(), s.deps.clone(), s.outputs.clone(), s.order().to_vec(), s.index.len())
    }

    #[test]
    fn extension_runs_only_new_nodes_and_reuses_old_outputs() {
        let mut s = session("j");
        let p = extend(
            &mut s,
            vec![
                node("d", "vec.scale", &[("v", Arg::reference("c")), ("k", Arg::reference("b"))]),
                node("c", "const", &[("value", Arg::Lit(Value::Array(vec![Value::Float(2.0)])))]),
            ],
            &[],
        )
        .unwrap();
        // Default outputs: the new sinks; c comes before d although listed after it.
        assert_eq!(p.outputs, vec!["d".to_string()]);
        assert_eq!(ids(&s, &p), vec!["c", "d"]);
        assert!(!p.needed[0] && !p.needed[1], "a and b have outputs");
        // The order stays topological over all nodes.
        let pos: HashMap<usize, usize> = s.order().iter().enumerate().map(|(k, &i)| (i, k)).collect();
        for (i, ds) in s.deps.iter().enumerate() {
            for d in ds {
                assert!(pos[d] < pos[&i]);
            }
        }
        // Once recorded, outputs are reused: asking for d again runs nothing.
        s.record(vec![None, None, Some(Value::Float(2.0)), Some(Value::Float(2.0))]);
        let p = extend(&mut s, vec![node("e", "const", &[("value", Arg::reference("d"))])], &["e", "a"]).unwrap();
        assert_eq!(ids(&s, &p), vec!["e"]);
        assert_eq!(p.outputs, vec!["e".to_string(), "a".to_string()]);
    }

    #[test]
    fn refused_extensions_leave_the_session_unchanged() {
        let mut s = session("j");
        let before = snapshot(&s);

        // Duplicate of an old id, and twice within the extension.
        let e = extend(&mut s, vec![node("a", "const", &[("value", lit(2.0))])], &[]).unwrap_err();
        assert_eq!((e.code, e.node.as_deref()), (ErrorCode::InvalidJob, Some("a")));
        let e = extend(
            &mut s,
            vec![node("x", "const", &[("value", lit(2.0))]), node("x", "const", &[("value", lit(2.0))])],
            &[],
        )
        .unwrap_err();
        assert_eq!((e.code, e.node.as_deref()), (ErrorCode::InvalidJob, Some("x")));

        // Missing reference: names node and argument.
        let e = extend(&mut s, vec![node("x", "const", &[("value", Arg::reference("ghost"))])], &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingReference);
        assert_eq!((e.node.as_deref(), e.argument.as_deref()), (Some("x"), Some("value")));

        // A cycle among new nodes (through an old one) is refused at insertion and named.
        let e = extend(
            &mut s,
            vec![
                node("x", "vec.add", &[("a", Arg::reference("y")), ("b", Arg::reference("b"))]),
                node("y", "const", &[("value", Arg::reference("x"))]),
            ],
            &[],
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::Cycle, "{e:?}");
        assert!(e.message.contains("x -> y -> x") || e.message.contains("y -> x -> y"), "{}", e.message);
        let e = extend(&mut s, vec![node("x", "const", &[("value", Arg::reference("x"))])], &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Cycle);

        // Bad argument kind, unknown output, empty extension.
        let e = extend(&mut s, vec![node("x", "vec.norm", &[("v", Arg::Lit(Value::Str("no".into())))])], &[]).unwrap_err();
        assert_eq!((e.code, e.argument.as_deref()), (ErrorCode::InvalidArgument, Some("v")));
        let e = extend(&mut s, vec![node("x", "const", &[("value", lit(1.0))])], &["nope"]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJob);
        assert_eq!(extend(&mut s, vec![], &[]).unwrap_err().code, ErrorCode::InvalidJob);

        assert!(snapshot(&s) == before, "a refused extension changed the session");
        // And the session is still usable.
        let p = extend(&mut s, vec![node("x", "const", &[("value", Arg::reference("b"))])], &[]).unwrap();
        assert_eq!(ids(&s, &p), vec!["x"]);
    }

    #[test]
    fn node_limit_counts_the_whole_session() {
        let mut s = session("j");
        let many: Vec<Node> = (0..MAX_NODES - 2).map(|i| node(&format!("n{i}"), "const", &[("value", lit(1.0))])).collect();
        extend(&mut s, many, &["n0"]).unwrap();
        assert_eq!(s.len(), MAX_NODES);
        let e = extend(&mut s, vec![node("one_more", "const", &[("value", lit(1.0))])], &[]).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidJob);
        assert!(e.message.contains("limit"), "{}", e.message);
        assert_eq!(s.len(), MAX_NODES);
    }

    fn store(max_sessions: usize, session_ttl_s: u64) -> SessionStore {
        SessionStore::new(SessionConfig {
            max_sessions,
            session_ttl_s,
        })
    }

    #[test]
    fn store_evicts_the_least_recently_used() {
        let st = store(2, 600);
        let t0 = Instant::now();
        st.insert_at("a", session("a"), t0);
        st.insert_at("b", session("b"), t0);
        assert!(st.get_at("a", t0).is_some(), "a is now the most recently used");
        st.insert_at("c", session("c"), t0);
        assert_eq!(st.len(), 2);
        assert!(st.get_at("b", t0).is_none(), "b was the least recently used");
        assert!(st.get_at("a", t0).is_some());
        assert!(st.get_at("c", t0).is_some());
        assert_eq!(st.evictions(), 1);
        // Replacing a session does not evict another.
        st.insert_at("c", session("c"), t0);
        assert_eq!(st.len(), 2);
        assert!(st.get_at("a", t0).is_some());
        // No room at all: nothing is kept.
        let none = store(0, 600);
        none.insert_at("a", session("a"), t0);
        assert!(none.is_empty());
    }

    #[test]
    fn store_drops_idle_sessions() {
        let st = store(10, 60);
        let t0 = Instant::now();
        st.insert_at("a", session("a"), t0);
        st.insert_at("b", session("b"), t0);
        // Use refreshes the idle clock.
        assert!(st.get_at("a", t0 + Duration::from_secs(59)).is_some());
        assert!(st.get_at("a", t0 + Duration::from_secs(118)).is_some());
        assert!(st.get_at("b", t0 + Duration::from_secs(60)).is_none(), "b idled for the TTL");
        assert!(st.get_at("a", t0 + Duration::from_secs(178)).is_none(), "a idled for the TTL");
        // Expired sessions are also swept on insert.
        st.insert_at("c", session("c"), t0);
        st.insert_at("d", session("d"), t0 + Duration::from_secs(61));
        assert_eq!(st.len(), 1);
        assert_eq!(st.evictions(), 3);
    }

    #[tokio::test]
    async fn extends_of_one_session_are_serialized() {
        let st = Arc::new(store(10, 600));
        st.insert("j", session("j"));
        let handle = st.get("j").unwrap();
        let guard = handle.lock().await;
        // A second extender waits for the first.
        let other = st.get("j").unwrap();
        assert!(other.try_lock().is_err());
        drop(guard);
        assert!(other.try_lock().is_ok());
    }
}
