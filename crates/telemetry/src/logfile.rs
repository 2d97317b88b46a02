//! A size-rotated log file whose rotated files are gzipped in the background.
//!
//! [`RotatingFile`] appends to `<dir>/<service>.log`. When a write would take that file past
//! `max_bytes`, the file is renamed to `<service>.<UTC time>.<n>.log` (e.g.
//! `runner.20261126T143000Z.1.log`; `n` keeps names unique when several rotations fall in one
//! second), a fresh `<service>.log` is opened, and a background thread gzips the rotated file
//! to `….log.gz` (temporary name, fsync, rename, then the plain file is deleted) and keeps only
//! the newest `keep` archives.
//!
//! It is a `tracing-subscriber` [`MakeWriter`]: the `fmt` layer formats an event into one
//! buffer and hands it over in a single `write` call, so one write is one event, and an event
//! is never split across two files (an event longer than `max_bytes` gets a file to itself).
//!
//! Logging never fails the service: an I/O error while rotating, writing or compressing is
//! reported once on stderr (once per run of failures) and writing carries on in the current
//! file; a failed rotation is retried after [`RETRY_DELAY`].
//!
//! On open, leftovers of a process that stopped mid-compression are tidied: stale temporary
//! files are deleted and plain rotated files are compressed. One process per `(dir, service)`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;
use tracing_subscriber::fmt::MakeWriter;

/// `HSYNC_LOG_MAX_BYTES` default: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// `HSYNC_LOG_KEEP` default.
pub const DEFAULT_KEEP: usize = 10;
/// After a failed rotation, writes go on in the current file and the next rotation is tried
/// no sooner than this (a broken directory must not cost a failing rename per event).
pub const RETRY_DELAY: Duration = Duration::from_secs(10);

/// Where and how a service writes its log file (see [`LogFileConfig::from_env`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFileConfig {
    /// Directory of `<service>.log` and its archives; created if missing.
    pub dir: PathBuf,
    /// Size at which the file is rotated.
    pub max_bytes: u64,
    /// How many gzipped archives are kept (the newest ones).
    pub keep: usize,
}

impl LogFileConfig {
    /// `HSYNC_LOG_DIR` (unset or empty: no log file, `Ok(None)`), `HSYNC_LOG_MAX_BYTES`
    /// (default [`DEFAULT_MAX_BYTES`]), `HSYNC_LOG_KEEP` (default [`DEFAULT_KEEP`]).
    /// A malformed number is an error even without `HSYNC_LOG_DIR`.
    pub fn from_env() -> Result<Option<Self>, String> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// [`from_env`](Self::from_env) with the variables looked up by `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let var = |key: &str| {
            var(key)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let max_bytes = match var("HSYNC_LOG_MAX_BYTES") {
            None => DEFAULT_MAX_BYTES,
            Some(v) => match v.parse::<u64>() {
                Ok(0) => return Err(format!("HSYNC_LOG_MAX_BYTES={v} must be at least 1")),
                Ok(n) => n,
                Err(_) => return Err(format!("HSYNC_LOG_MAX_BYTES={v} is not a number of bytes")),
            },
        };
        let keep = match var("HSYNC_LOG_KEEP") {
            None => DEFAULT_KEEP,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| format!("HSYNC_LOG_KEEP={v} is not a number of files"))?,
        };
        Ok(var("HSYNC_LOG_DIR").map(|dir| LogFileConfig {
            dir: PathBuf::from(dir),
            max_bytes,
            keep,
        }))
    }
}

/// The rotating log file; cheap to clone (all clones share one file).
///
/// Use it as the writer of a `fmt` layer (`.with_writer(file.clone())`), or write to
/// `&RotatingFile` directly: every `write` call is kept whole in one file.
#[derive(Clone)]
pub struct RotatingFile {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    common: Arc<Common>,
}

/// What the compression thread shares with the writers.
struct Common {
    dir: PathBuf,
    service: String,
    keep: usize,
    /// Rotated files queued or being compressed.
    pending: Mutex<usize>,
    idle: Condvar,
    /// Reports printed on stderr (see [`RotatingFile::errors_reported`]).
    reports: AtomicU64,
    compress_failing: AtomicBool,
}

struct State {
    file: File,
    /// Where `file` is: `<service>.log`, unless a rotation failed halfway (see `rotate`).
    path: PathBuf,
    size: u64,
    max_bytes: u64,
    /// Stamp and number of the last rotated name, so same-second rotations count up.
    last_name: Option<(String, u64)>,
    retry_at: Option<Instant>,
    retry_delay: Duration,
    rotate_failing: bool,
    write_failing: bool,
    compressor: Option<mpsc::Sender<PathBuf>>,
    now: fn() -> SystemTime,
}

impl std::fmt::Debug for RotatingFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingFile")
            .field("dir", &self.shared.common.dir)
            .field("service", &self.shared.common.service)
            .finish_non_exhaustive()
    }
}

impl RotatingFile {
    /// Creates `cfg.dir` if needed and opens `<dir>/<service>.log` for appending (an existing
    /// file is continued, its size counts towards `max_bytes`). Errors only here, at open.
    pub fn open(service: &str, cfg: &LogFileConfig) -> io::Result<Self> {
        if service.is_empty() || service.contains(['/', '\\']) || service.starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{service:?} cannot name a log file"),
            ));
        }
        fs::create_dir_all(&cfg.dir)?;
        let path = cfg.dir.join(format!("{service}.log"));
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let common = Arc::new(Common {
            dir: cfg.dir.clone(),
            service: service.to_owned(),
            keep: cfg.keep,
            pending: Mutex::new(0),
            idle: Condvar::new(),
            reports: AtomicU64::new(0),
            compress_failing: AtomicBool::new(false),
        });
        let state = State {
            file,
            path,
            size,
            max_bytes: cfg.max_bytes.max(1),
            last_name: None,
            retry_at: None,
            retry_delay: RETRY_DELAY,
            rotate_failing: false,
            write_failing: false,
            compressor: None,
            now: SystemTime::now,
        };
        let this = RotatingFile {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                common,
            }),
        };
        this.tidy_leftovers();
        Ok(this)
    }

    /// Path of the live file, `<dir>/<service>.log`.
    pub fn live_path(&self) -> PathBuf {
        let c = &self.shared.common;
        c.dir.join(format!("{}.log", c.service))
    }

    /// Blocks until every rotated file handed to the compression thread so far is done
    /// (gzipped and pruned, or given up on with a report).
    pub fn wait_for_compression(&self) {
        let c = &self.shared.common;
        let mut pending = lock(&c.pending);
        while *pending > 0 {
            pending = c.idle.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// [`wait_for_compression`](Self::wait_for_compression) for at most `timeout`; `false`
    /// if compression was still running then (a plain rotated file left behind is compressed
    /// by the next [`open`](Self::open)).
    pub fn wait_for_compression_timeout(&self, timeout: Duration) -> bool {
        let c = &self.shared.common;
        let pending = lock(&c.pending);
        let (pending, _) = c
            .idle
            .wait_timeout_while(pending, timeout, |p| *p > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *pending == 0
    }

    /// How many problems have been reported on stderr so far.
    pub fn errors_reported(&self) -> u64 {
        self.shared.common.reports.load(Ordering::Relaxed)
    }

    /// Appends `buf` whole, rotating first if it would take the file past `max_bytes`.
    /// Never fails: errors are reported on stderr instead.
    fn write_event(&self, buf: &[u8]) {
        if buf.is_empty() {
            return;
        }
        let common = &self.shared.common;
        let mut st = lock(&self.shared.state);
        let len = buf.len() as u64;
        let due = st.retry_at.is_none_or(|t| Instant::now() >= t);
        if st.size > 0 && st.size.saturating_add(len) > st.max_bytes && due {
            match st.rotate(common) {
                Ok(rotated) => {
                    st.rotate_failing = false;
                    st.retry_at = None;
                    st.queue(common, rotated);
                }
                Err(e) => {
                    st.retry_at = Some(Instant::now() + st.retry_delay);
                    if !std::mem::replace(&mut st.rotate_failing, true) {
                        common.report(format_args!(
                            "rotating {} failed: {e}; still writing to it (reported once \
                             until a rotation succeeds)",
                            st.path.display()
                        ));
                    }
                }
            }
        }
        match st.file.write_all(buf) {
            Ok(()) => st.write_failing = false,
            Err(e) => {
                if !std::mem::replace(&mut st.write_failing, true) {
                    common.report(format_args!(
                        "writing to {} failed: {e}; events are lost until a write succeeds",
                        st.path.display()
                    ));
                }
            }
        }
        // Counted even after an error: a partial write takes room too, and over-counting
        // only brings the next rotation forward.
        st.size = st.size.saturating_add(len);
    }

    /// Queues plain rotated files left by an earlier process, deletes stale temporary files
    /// and surplus archives.
    fn tidy_leftovers(&self) {
        let common = &self.shared.common;
        let Ok(entries) = fs::read_dir(&common.dir) else {
            return;
        };
        let mut plain = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match common.parse_rotated(name) {
                Some((_, Kind::Temp)) => {
                    let _ = fs::remove_file(entry.path());
                }
                Some((key, Kind::Plain)) => plain.push((key, entry.path())),
                _ => {}
            }
        }
        plain.sort();
        let mut st = lock(&self.shared.state);
        for (_, path) in plain {
            if gz_path(&path).exists() {
                // Stopped between the archive's rename and the plain file's deletion.
                let _ = fs::remove_file(&path);
            } else {
                st.queue(common, path);
            }
        }
        drop(st);
        common.prune();
    }

    #[cfg(test)]
    fn set_clock(&self, now: fn() -> SystemTime) {
        lock(&self.shared.state).now = now;
    }

    #[cfg(test)]
    fn set_retry_delay(&self, delay: Duration) {
        lock(&self.shared.state).retry_delay = delay;
    }
}

impl io::Write for &RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_event(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // `File` has no user-space buffer; every event is already with the OS.
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = &'a RotatingFile;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl State {
    /// Renames the current file to a fresh rotated name and opens a new live file; returns
    /// the rotated path. On error nothing changed, except when the new file cannot be opened
    /// *and* the rename cannot be undone: then writing goes on in the renamed file, which the
    /// next rotation renames again.
    fn rotate(&mut self, common: &Common) -> io::Result<PathBuf> {
        let stamp = utc_stamp((self.now)());
        let mut n = match &self.last_name {
            Some((last, n)) if *last == stamp => n + 1,
            _ => 1,
        };
        let rotated = loop {
            let candidate = common
                .dir
                .join(format!("{}.{stamp}.{n}.log", common.service));
            // Also skips names an earlier process used in the same second.
            let taken = [candidate.clone(), gz_path(&candidate), tmp_path(&candidate)]
                .iter()
                .any(|p| p.symlink_metadata().is_ok());
            if !taken {
                break candidate;
            }
            n += 1;
        };
        fs::rename(&self.path, &rotated)?;
        let live = common.dir.join(format!("{}.log", common.service));
        match open_append(&live).and_then(|f| Ok((f.metadata()?.len(), f))) {
            Ok((size, file)) => {
                // Closes the rotated file.
                self.file = file;
                self.path = live;
                self.size = size;
                self.last_name = Some((stamp, n));
                Ok(rotated)
            }
            Err(e) => {
                if fs::rename(&rotated, &self.path).is_err() {
                    self.path = rotated;
                }
                Err(e)
            }
        }
    }

    /// Hands `rotated` to the compression thread (started on first use).
    fn queue(&mut self, common: &Arc<Common>, rotated: PathBuf) {
        *lock(&common.pending) += 1;
        let sender = match self.compressor.take() {
            Some(s) => Ok(s),
            None => spawn_compressor(common.clone()),
        };
        let failure = match sender {
            Ok(sender) => match sender.send(rotated) {
                Ok(()) => {
                    self.compressor = Some(sender);
                    return;
                }
                // The thread is gone (it panicked); the next rotation starts a new one.
                Err(mpsc::SendError(path)) => {
                    format!(
                        "the compression thread stopped; {} stays uncompressed",
                        path.display()
                    )
                }
            },
            Err(e) => format!(
                "cannot start the compression thread: {e}; {} stays uncompressed",
                rotated.display()
            ),
        };
        common.done();
        common.report(format_args!("{failure}"));
    }
}

fn spawn_compressor(common: Arc<Common>) -> io::Result<mpsc::Sender<PathBuf>> {
    let (tx, rx) = mpsc::channel::<PathBuf>();
    std::thread::Builder::new()
        .name("hsync-log-gzip".into())
        .spawn(move || {
            for plain in rx {
                // Counts the job done even if it panics, so waiters never hang.
                let _done = Done(&common);
                match compress(&plain) {
                    Ok(()) => common.compress_failing.store(false, Ordering::Relaxed),
                    Err(e) => {
                        if !common.compress_failing.swap(true, Ordering::Relaxed) {
                            common.report(format_args!(
                                "gzipping {} failed: {e}; it stays uncompressed (reported once \
                                 until a compression succeeds)",
                                plain.display()
                            ));
                        }
                    }
                }
                common.prune();
            }
        })?;
    Ok(tx)
}

struct Done<'a>(&'a Common);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.done();
    }
}

/// What a file in the log directory is, by name.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Gz,
    Temp,
}

impl Common {
    fn report(&self, msg: std::fmt::Arguments<'_>) {
        self.reports.fetch_add(1, Ordering::Relaxed);
        // Never through `tracing`: this runs inside the subscriber, holding the file's lock.
        eprintln!("hsync-telemetry: log file: {msg}");
    }

    fn done(&self) {
        let mut pending = lock(&self.pending);
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.idle.notify_all();
        }
    }

    /// `(stamp, n)` and kind of a rotated file of this service, e.g.
    /// `svc.20261126T143000Z.2.log.gz`; `None` for any other name.
    fn parse_rotated(&self, name: &str) -> Option<((String, u64), Kind)> {
        let rest = name
            .strip_prefix(self.service.as_str())?
            .strip_prefix('.')?;
        let (stamp, rest) = rest.split_once('.')?;
        let (n, suffix) = rest.split_once('.')?;
        let kind = match suffix {
            "log" => Kind::Plain,
            "log.gz" => Kind::Gz,
            "log.gz.tmp" => Kind::Temp,
            _ => return None,
        };
        let b = stamp.as_bytes();
        let stamp_ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit);
        let n_ok = !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
        if !(stamp_ok && n_ok) {
            return None;
        }
        Some(((stamp.to_owned(), n.parse().ok()?), kind))
    }

    /// Deletes all but the newest `keep` archives.
    fn prune(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut archives: Vec<_> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                match self.parse_rotated(name.to_str()?)? {
                    (key, Kind::Gz) => Some((key, e.path())),
                    _ => None,
                }
            })
            .collect();
        if archives.len() <= self.keep {
            return;
        }
        archives.sort();
        let surplus = archives.len() - self.keep;
        for (_, path) in archives.into_iter().take(surplus) {
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    self.report(format_args!(
                        "deleting the old archive {} failed: {e}",
                        path.display()
                    ));
                }
            }
        }
    }
}

/// Gzips `plain` to `plain.gz` by way of a temporary file, then deletes `plain`.
fn compress(plain: &Path) -> io::Result<()> {
    let gz = gz_path(plain);
    let tmp = tmp_path(plain);
    let written = (|| {
        let mut input = File::open(plain)?;
        let mut encoder =
            GzEncoder::new(BufWriter::new(File::create(&tmp)?), Compression::default());
        io::copy(&mut input, &mut encoder)?;
        let out = encoder.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        fs::rename(&tmp, &gz)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if let Some(dir) = plain.parent() {
        // Makes the rename durable before the only other copy goes (best effort).
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    fs::remove_file(plain)
}

fn gz_path(plain: &Path) -> PathBuf {
    let mut p = plain.as_os_str().to_owned();
    p.push(".gz");
    p.into()
}

fn tmp_path(plain: &Path) -> PathBuf {
    let mut p = plain.as_os_str().to_owned();
    p.push(".gz.tmp");
    p.into()
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// `t` in UTC as `YYYYMMDDTHHMMSSZ` (times before 1970 read as 1970).
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Proleptic Gregorian `(year, month, day)` of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::collections::{BTreeSet, HashMap};
    use std::io::Read as _;
    use tempfile::TempDir;

    const SVC: &str = "svc";

    fn cfg(dir: &Path, max_bytes: u64, keep: usize) -> LogFileConfig {
        LogFileConfig {
            dir: dir.to_owned(),
            max_bytes,
            keep,
        }
    }

    /// One 30-byte line.
    fn line(i: usize) -> String {
        let l = format!("event {i:04} {}\n", "x".repeat(18));
        assert_eq!(l.len(), 30);
        l
    }

    /// What the fmt layer does per event: one `make_writer`, one `write_all`.
    fn emit(file: &RotatingFile, s: &str) {
        file.make_writer().write_all(s.as_bytes()).unwrap();
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    /// Archives oldest first (by stamp, then number).
    fn archives(file: &RotatingFile) -> Vec<PathBuf> {
        let common = &file.shared.common;
        let mut found: Vec<_> = names(&common.dir)
            .into_iter()
            .filter_map(|n| match common.parse_rotated(&n)? {
                (key, Kind::Gz) => Some((key, common.dir.join(n))),
                _ => None,
            })
            .collect();
        found.sort();
        found.into_iter().map(|(_, p)| p).collect()
    }

    fn gunzip(path: &Path) -> String {
        let mut out = String::new();
        GzDecoder::new(File::open(path).unwrap())
            .read_to_string(&mut out)
            .unwrap_or_else(|e| panic!("{} is not valid gzip: {e}", path.display()));
        out
    }

    fn fixed_clock() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_795_703_400) // 2026-11-26T14:30:00Z
    }

    #[test]
    fn rotates_at_the_limit_and_gzips_whole_lines() {
        let tmp = TempDir::new().unwrap();
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 100, 10)).unwrap();
        let lines: Vec<String> = (0..10).map(line).collect();
        for l in &lines {
            emit(&file, l);
        }
        file.wait_for_compression();

        // 3 lines (90 bytes) fit in 100; the 4th would not, so it starts the next file.
        let archives = archives(&file);
        assert_eq!(archives.len(), 3, "{:?}", names(tmp.path()));
        for (i, archive) in archives.iter().enumerate() {
            assert_eq!(gunzip(archive), lines[i * 3..i * 3 + 3].concat());
        }
        assert_eq!(fs::read_to_string(file.live_path()).unwrap(), lines[9]);
        // Only the live file and the archives: no plain rotated or temporary files left.
        assert_eq!(names(tmp.path()).len(), 4, "{:?}", names(tmp.path()));

        // The live file keeps receiving writes after rotation.
        emit(&file, &line(10));
        assert_eq!(
            fs::read_to_string(file.live_path()).unwrap(),
            lines[9].clone() + &line(10)
        );
        assert_eq!(file.errors_reported(), 0);
    }

    #[test]
    fn an_event_longer_than_the_limit_gets_a_file_of_its_own() {
        let tmp = TempDir::new().unwrap();
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 10, 10)).unwrap();
        let long = format!("{}\n", "a".repeat(25));
        emit(&file, &long);
        assert_eq!(fs::read_to_string(file.live_path()).unwrap(), long);
        emit(&file, "b\n");
        emit(&file, &format!("{}\n", "c".repeat(30)));
        file.wait_for_compression();
        let contents: Vec<String> = archives(&file).iter().map(|p| gunzip(p)).collect();
        assert_eq!(contents, [long, "b\n".to_owned()]);
        assert_eq!(
            fs::read_to_string(file.live_path()).unwrap(),
            format!("{}\n", "c".repeat(30))
        );
    }

    #[test]
    fn keeps_only_the_newest_archives() {
        let tmp = TempDir::new().unwrap();
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 30, 2)).unwrap();
        // Each 30-byte line fills the file, so every further line rotates: 6 rotations.
        for i in 0..7 {
            emit(&file, &line(i));
        }
        file.wait_for_compression();
        let contents: Vec<String> = archives(&file).iter().map(|p| gunzip(p)).collect();
        assert_eq!(contents, [line(4), line(5)]);
        assert_eq!(names(tmp.path()).len(), 3, "{:?}", names(tmp.path()));
        assert_eq!(fs::read_to_string(file.live_path()).unwrap(), line(6));
    }

    #[test]
    fn rotations_within_one_second_get_unique_names() {
        let tmp = TempDir::new().unwrap();
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 30, 10)).unwrap();
        file.set_clock(fixed_clock);
        for i in 0..4 {
            emit(&file, &line(i));
        }
        file.wait_for_compression();
        let expected: BTreeSet<String> = ["svc.log".to_owned()]
            .into_iter()
            .chain((1..=3).map(|n| format!("svc.20261126T143000Z.{n}.log.gz")))
            .collect();
        assert_eq!(names(tmp.path()), expected);
        drop(file);

        // A restart within the same second continues after the names already taken.
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 30, 10)).unwrap();
        file.set_clock(fixed_clock);
        emit(&file, &line(4));
        file.wait_for_compression();
        assert_eq!(
            gunzip(&tmp.path().join("svc.20261126T143000Z.4.log.gz")),
            line(3),
            "the reopened file's earlier content counts towards the limit"
        );
        assert_eq!(fs::read_to_string(file.live_path()).unwrap(), line(4));
    }

    #[test]
    fn utc_stamps() {
        let at = |s: u64| utc_stamp(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_795_703_400), "20261126T143000Z");
        assert_eq!(at(4_102_444_799), "20991231T235959Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH - Duration::from_secs(5)),
            "19700101T000000Z"
        );
    }

    #[test]
    fn rotation_error_is_reported_once_and_writing_goes_on() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("logs");
        let moved = tmp.path().join("moved");
        let file = RotatingFile::open(SVC, &cfg(&dir, 30, 10)).unwrap();
        file.set_retry_delay(Duration::ZERO);
        emit(&file, &line(0));

        // The open file moves away and a plain file takes the directory's place: every rename
        // in `dir` now fails.
        fs::rename(&dir, &moved).unwrap();
        fs::write(&dir, "not a directory").unwrap();
        for i in 1..4 {
            emit(&file, &line(i)); // each one retries the rotation (no delay) and fails
        }
        assert_eq!(file.errors_reported(), 1, "reported once, not per event");
        let all: String = (0..4).map(line).collect();
        assert_eq!(fs::read_to_string(moved.join("svc.log")).unwrap(), all);

        // Once the directory is back, the next write rotates normally.
        fs::remove_file(&dir).unwrap();
        fs::rename(&moved, &dir).unwrap();
        emit(&file, &line(4));
        file.wait_for_compression();
        let archives = archives(&file);
        assert_eq!(archives.len(), 1);
        assert_eq!(gunzip(&archives[0]), all);
        assert_eq!(fs::read_to_string(file.live_path()).unwrap(), line(4));
        assert_eq!(file.errors_reported(), 1);
    }

    #[test]
    fn a_failed_rotation_is_not_retried_on_every_event() {
        let tmp = TempDir::new().unwrap();
        let dir = tmp.path().join("logs");
        let moved = tmp.path().join("moved");
        let file = RotatingFile::open(SVC, &cfg(&dir, 30, 10)).unwrap();
        emit(&file, &line(0));
        fs::rename(&dir, &moved).unwrap();
        fs::write(&dir, "not a directory").unwrap();
        emit(&file, &line(1)); // fails: next try after RETRY_DELAY (10 s)
        fs::remove_file(&dir).unwrap();
        fs::rename(&moved, &dir).unwrap();
        emit(&file, &line(2));
        file.wait_for_compression();
        assert!(archives(&file).is_empty());
        assert_eq!(
            fs::read_to_string(file.live_path()).unwrap(),
            (0..3).map(line).collect::<String>()
        );
        assert_eq!(file.errors_reported(), 1);
    }

    #[test]
    fn open_fails_cleanly_on_a_bad_directory_or_name() {
        let tmp = TempDir::new().unwrap();
        let not_a_dir = tmp.path().join("file");
        fs::write(&not_a_dir, "x").unwrap();
        assert!(RotatingFile::open(SVC, &cfg(&not_a_dir, 100, 1)).is_err());
        let err = RotatingFile::open("a/b", &cfg(tmp.path(), 100, 1)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn leftovers_of_an_earlier_process_are_tidied_on_open() {
        let tmp = TempDir::new().unwrap();
        let d = tmp.path();
        fs::write(d.join("svc.20250101T000000Z.1.log"), "old\n").unwrap();
        fs::write(d.join("svc.20250101T000000Z.2.log.gz.tmp"), "half").unwrap();
        // Stopped after the archive's rename, before the plain file's deletion.
        compress_to(&d.join("svc.20250101T000000Z.3.log.gz"), "three\n");
        fs::write(d.join("svc.20250101T000000Z.3.log"), "three\n").unwrap();
        fs::write(d.join("other.20250101T000000Z.1.log"), "not ours\n").unwrap();

        let file = RotatingFile::open(SVC, &cfg(d, 100, 10)).unwrap();
        file.wait_for_compression();
        let expected: BTreeSet<String> = [
            "svc.log",
            "svc.20250101T000000Z.1.log.gz",
            "svc.20250101T000000Z.3.log.gz",
            "other.20250101T000000Z.1.log",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(names(d), expected);
        assert_eq!(gunzip(&d.join("svc.20250101T000000Z.1.log.gz")), "old\n");
        assert_eq!(gunzip(&d.join("svc.20250101T000000Z.3.log.gz")), "three\n");
    }

    fn compress_to(path: &Path, content: &str) {
        let mut enc = GzEncoder::new(File::create(path).unwrap(), Compression::default());
        enc.write_all(content.as_bytes()).unwrap();
        enc.finish().unwrap();
    }

    #[test]
    fn concurrent_writers_never_split_an_event() {
        let tmp = TempDir::new().unwrap();
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 2000, 1000)).unwrap();
        let expected: Vec<Vec<String>> = (0..4)
            .map(|t| {
                (0..250)
                    .map(|i| format!("thread {t} event {i} {}\n", "y".repeat(i % 37)))
                    .collect()
            })
            .collect();
        std::thread::scope(|s| {
            for lines in &expected {
                let file = file.clone();
                s.spawn(move || lines.iter().for_each(|l| emit(&file, l)));
            }
        });
        file.wait_for_compression();

        let mut files: Vec<String> = archives(&file).iter().map(|p| gunzip(p)).collect();
        assert!(
            files.len() > 5,
            "expected several rotations, got {}",
            files.len()
        );
        for f in &files {
            assert!(f.len() <= 2000 && f.ends_with('\n'), "{} bytes", f.len());
        }
        files.push(fs::read_to_string(file.live_path()).unwrap());
        // Per thread, the lines read back in file order are exactly the lines written.
        let mut seen: Vec<Vec<String>> = vec![Vec::new(); 4];
        for l in files.concat().split_inclusive('\n') {
            let t: usize = l.split(' ').nth(1).unwrap().parse().unwrap();
            seen[t].push(l.to_owned());
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn works_as_the_writer_of_a_fmt_layer() {
        use tracing_subscriber::layer::SubscriberExt as _;

        let tmp = TempDir::new().unwrap();
        let file = RotatingFile::open(SVC, &cfg(tmp.path(), 1000, 100)).unwrap();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_ansi(false)
                .with_writer(file.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..50 {
                tracing::info!(i, "message number {i}");
            }
        });
        file.wait_for_compression();
        let mut content: String = archives(&file).iter().map(|p| gunzip(p)).collect();
        assert!(content.len() > 1000, "rotated at least once");
        content += &fs::read_to_string(file.live_path()).unwrap();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 50);
        for (i, l) in lines.iter().enumerate() {
            assert!(l.starts_with('{') && l.ends_with('}'), "{l}");
            assert!(l.contains(&format!("\"message number {i}\"")), "{l}");
            assert!(!l.contains('\x1b'), "{l}");
        }
    }

    #[test]
    fn config_from_variables() {
        let parse = |vars: &[(&str, &str)]| {
            let vars: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            LogFileConfig::from_lookup(|k| vars.get(k).cloned())
        };
        assert_eq!(parse(&[]), Ok(None));
        assert_eq!(parse(&[("HSYNC_LOG_DIR", " ")]), Ok(None));
        assert_eq!(
            parse(&[("HSYNC_LOG_DIR", "/var/log/hsync")]),
            Ok(Some(cfg(Path::new("/var/log/hsync"), 64 << 20, 10)))
        );
        assert_eq!(
            parse(&[
                ("HSYNC_LOG_DIR", "/l"),
                ("HSYNC_LOG_MAX_BYTES", "1000"),
                ("HSYNC_LOG_KEEP", "0"),
            ]),
            Ok(Some(cfg(Path::new("/l"), 1000, 0)))
        );
        assert_eq!(
            parse(&[("HSYNC_LOG_DIR", "/l"), ("HSYNC_LOG_MAX_BYTES", "abc")]),
            Err("HSYNC_LOG_MAX_BYTES=abc is not a number of bytes".to_owned())
        );
        assert_eq!(
            parse(&[("HSYNC_LOG_MAX_BYTES", "0")]),
            Err("HSYNC_LOG_MAX_BYTES=0 must be at least 1".to_owned())
        );
        assert_eq!(
            parse(&[("HSYNC_LOG_KEEP", "-1")]),
            Err("HSYNC_LOG_KEEP=-1 is not a number of files".to_owned())
        );
    }
}
