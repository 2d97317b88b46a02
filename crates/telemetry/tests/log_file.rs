//! Log-file scenario (own test binary: `init` is once per process): `init` rejects a bad log
//! configuration without installing anything, then writes events to the rotating file in the
//! same text format as stderr, without colours, and gzips what it rotates.

use std::io::Read as _;

use hsync_telemetry::{init, LogFileConfig, TelemetryConfig};

fn config(log_file: Result<Option<LogFileConfig>, String>) -> TelemetryConfig {
    TelemetryConfig {
        service_name: "test-svc".into(),
        otlp_endpoint: None,
        log_filter: "info".into(),
        json_logs: false,
        log_file,
    }
}

#[test]
fn init_writes_a_rotating_log_file() {
    let tmp = tempfile::TempDir::new().unwrap();

    let err = init(config(Err(
        "HSYNC_LOG_MAX_BYTES=abc is not a number of bytes".into(),
    )))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "HSYNC_LOG_MAX_BYTES=abc is not a number of bytes"
    );

    let not_a_dir = tmp.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let err = init(config(Ok(Some(LogFileConfig {
        dir: not_a_dir.clone(),
        max_bytes: 1000,
        keep: 5,
    }))))
    .unwrap_err();
    assert!(
        format!("{err:#}").contains(&not_a_dir.join("test-svc.log").display().to_string()),
        "{err:#}"
    );

    let dir = tmp.path().join("logs");
    let guard = init(config(Ok(Some(LogFileConfig {
        dir: dir.clone(),
        max_bytes: 1000,
        keep: 5,
    }))))
    .expect("init succeeds after failed attempts");
    for i in 0..40 {
        tracing::info!(i, "event number {i}");
    }
    guard.shutdown().unwrap(); // also waits for the compression

    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let archives: Vec<&String> = names.iter().filter(|n| n.ends_with(".log.gz")).collect();
    assert!(!archives.is_empty(), "rotated at least once: {names:?}");
    assert!(names.contains(&"test-svc.log".to_owned()), "{names:?}");
    assert_eq!(
        names.len(),
        archives.len() + 1,
        "only archives besides the live file: {names:?}"
    );

    let mut all = String::new();
    for name in &archives {
        flate2::read::GzDecoder::new(std::fs::File::open(dir.join(name)).unwrap())
            .read_to_string(&mut all)
            .unwrap();
    }
    all += &std::fs::read_to_string(dir.join("test-svc.log")).unwrap();
    assert!(!all.contains('\x1b'), "no ANSI escapes in the file");
    let events: Vec<&str> = all.lines().filter(|l| l.contains("event number")).collect();
    assert_eq!(events.len(), 40, "{all}");
    for (i, line) in events.iter().enumerate() {
        assert!(line.contains(" INFO "), "{line}");
        assert!(line.ends_with(&format!("event number {i} i={i}")), "{line}");
    }
}
