//! The speedrun binary end to end: every mode runs and reports, and bad input or an unreachable
//! database ends it with a message saying what is wrong.
//!
//! The PostgreSQL modes run in the test database (`DCB_TEST_POSTGRES_URL`, default the local
//! `dcb_test`), in a schema of this test's own, one after another; the file and gRPC modes each
//! in a directory of their own.

use std::path::PathBuf;
use std::process::{Command, Output};

use coursebooking::speedrun::STYLES;

fn speedrun(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_speedrun")).args(args).output().expect("the speedrun starts")
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("speedrun-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `mode` for one second with `args` and returns its final JSON line, checking what every
/// run must report.
fn run(mode: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec![mode, "1", "--json"];
    all.extend_from_slice(args);
    let output = speedrun(&all);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{mode} {args:?} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("Events in store at start:") && stdout.contains("Result:"), "{stdout}");
    let last = stdout.lines().next_back().unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(json["mode"], mode);
    let ops = json["ops"].as_u64().unwrap();
    assert!(ops > 0, "{mode}: no operation in a second: {last}");
    let (start, end) = (json["events_start"].as_u64().unwrap(), json["events_end"].as_u64().unwrap());
    // Every operation records at least one event; iterations still running at the deadline finish
    // without being counted, so there may be more.
    assert!(end - start >= ops, "{mode}: {ops} ops but {} new events: {last}", end - start);
    if cfg!(target_os = "linux") {
        let busy = json["machine_busy"].as_f64().unwrap();
        assert!(busy > 0.0 && busy <= 1.0, "{last}");
        assert!(json["cpu_us_per_op"].as_f64().unwrap() > 0.0, "{last}");
    }
    json
}

#[test]
fn every_in_memory_mode_runs_and_reports() {
    for style in STYLES {
        let json = run(&format!("{style}-mem"), &["--clients", "2", "--floor"]);
        assert_eq!(json["clients"], 2);
        assert!(json.get("floor_us").is_none(), "an in-memory store has no floor: {json}");
    }
    let json = run("dcb-mem", &["--prefill", "5000", "--cache"]);
    assert!(json["events_start"].as_u64().unwrap() >= 5000, "{json}");
    assert_eq!(json["cache"], true);
}

#[test]
fn every_file_mode_runs_and_reports_its_floor() {
    for style in STYLES {
        let dir = scratch_dir(style);
        let dir_arg = dir.to_str().unwrap();
        let json = run(&format!("{style}-file"), &["--dir", dir_arg, "--floor"]);
        assert!(json["floor_us"].as_f64().unwrap() > 0.0, "{json}");
        assert!(json["floor_ratio"].as_f64().unwrap() > 0.0, "{json}");
        assert!(json.get("round_trip_us").is_none(), "{json}");
        // Events accumulate across runs unless `--reset` says otherwise.
        let again = run(&format!("{style}-file"), &["--dir", dir_arg]);
        assert_eq!(again["events_start"], json["events_end"]);
        let reset = run(&format!("{style}-file"), &["--dir", dir_arg, "--reset"]);
        assert_eq!(reset["events_start"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn every_grpc_mode_runs_over_a_server_in_process() {
    for style in STYLES {
        let dir = scratch_dir(&format!("grpc-{style}"));
        let json = run(&format!("{style}-grpc"), &["--dir", dir.to_str().unwrap(), "--reset"]);
        assert_eq!(json["events_start"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn every_postgres_mode_runs_and_reports_its_floor_and_round_trip() {
    let url = dcb_postgres::testkit::url();
    let schema = format!("speedrun_test_{}", std::process::id());
    let at = ["--database-url", url.as_str(), "--schema", schema.as_str()];
    for style in STYLES {
        let json = run(&format!("{style}-pg"), &[&at[..], &["--reset", "--floor"]].concat());
        assert_eq!(json["events_start"], 0, "--reset starts from an empty store: {json}");
        let (floor, round_trip) =
            (json["floor_us"].as_f64().unwrap(), json["round_trip_us"].as_f64().unwrap());
        assert!(floor > 0.0 && round_trip > 0.0, "{json}");
    }
    let json = run("dcb-pg", &[&at[..], &["--clients", "4", "--cache"]].concat());
    assert!(json["events_start"].as_u64().unwrap() > 0, "events accumulate across runs: {json}");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(dcb_postgres::testkit::drop_schema(&schema));
}

#[test]
fn bad_input_and_an_unreachable_database_say_what_is_wrong() {
    let bad_mode = speedrun(&["dcb-oracle"]);
    assert_eq!(bad_mode.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_mode.stderr).contains("unknown store \"oracle\""));
    let unreachable =
        speedrun(&["dcb-pg", "1", "--database-url", "postgres://postgres@127.0.0.1:1/postgres"]);
    assert_eq!(unreachable.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "the message names the server: {stderr}");
    let help = speedrun(&["--help"]);
    assert!(help.status.success() && String::from_utf8_lossy(&help.stdout).contains("usage: speedrun"));
}
