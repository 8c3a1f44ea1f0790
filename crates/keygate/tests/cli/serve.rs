//! `keygate serve` and `keygate doctor` on the embedded default and on PostgreSQL.

use crate::support::*;
use keygate_store::both_backends;
use keygate_store::testdb::TestDb;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_fresh_data_dir_serves_on_a_generated_key_and_stops_on_sigterm() {
    serves_and_stops_on_sigterm(None);
}

#[test]
fn one_worker_thread_serves_and_stops_on_sigterm_too() {
    // tokio's single-threaded scheduler (what a one-CPU process gets by default).
    serves_and_stops_on_sigterm(Some("1"));
}

#[test]
fn a_bad_worker_thread_count_is_refused_by_name() {
    let db = TestDb::sqlite();
    for bad in ["0", "many", "100000"] {
        let (ok, _, err) = run(keygate(&db, &[("KEYGATE_WORKER_THREADS", bad)]), &["serve"]);
        assert!(!ok, "{bad}");
        assert!(err.contains("KEYGATE_WORKER_THREADS") && err.contains(&format!("'{bad}'")), "{bad}: {err}");
    }
}

fn serves_and_stops_on_sigterm(workers: Option<&str>) {
    let db = TestDb::sqlite();
    let mut vars = vec![("KEYGATE_LISTEN", "127.0.0.1:0")];
    vars.extend(workers.map(|w| ("KEYGATE_WORKER_THREADS", w)));
    let mut child = keygate(&db, &vars).arg("serve").stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited early:\n{log}");
        log.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.trim().to_owned();
        }
    };
    assert!(log.contains("GENERATED A DEVELOPMENT MASTER KEY"), "{log}");
    assert!(log.contains("apart from database backups"), "{log}");
    if let Some(workers) = workers {
        let plural = if workers == "1" { "" } else { "s" };
        assert!(log.contains(&format!("async runtime: {workers} worker thread{plural} ")), "{log}");
    }
    let key_file = db.dir.path().join("data/master.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the generated key file is private");
    }
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let hex_key = key_text.lines().find_map(|l| l.strip_prefix("dev:")).unwrap();
    assert!(!log.contains(hex_key), "the generated key is never logged");

    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains(r#"{"status":"ok"}"#), "{reply}");

    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("received SIGTERM"), "{rest}");
}

#[test]
fn production_without_a_master_key_refuses_to_start_and_names_keygen() {
    let db = TestDb::sqlite();
    let (ok, _, stderr) = run(keygate(&db, &[("KEYGATE_ENV", "production")]), &["serve"]);
    assert!(!ok);
    assert!(stderr.contains("master_key_missing") && stderr.contains("keygate keygen"), "{stderr}");
    assert!(!db.dir.path().join("data").exists(), "nothing is written when refusing to start");
    let (ok, stdout, _) = run(keygate(&db, &[("KEYGATE_ENV", "production")]), &["doctor"]);
    assert!(!ok, "doctor is red too:\n{stdout}");
    assert!(stdout.contains("keygate keygen"), "{stdout}");
}

/// A development `master.key` left in the data directory is never picked up silently by a
/// production deployment: without a configured key it refuses (naming the file and how to
/// configure it on purpose), and with one it uses the configured key and says the file is
/// ignored.
#[test]
fn production_never_uses_a_leftover_development_key() {
    let db = TestDb::sqlite();
    let (ok, _, stderr) = run_with_stdin(
        keygate(&db, &[]),
        &["admin", "create", "--email", "dev@example.com"],
        "a-long-enough-password\n",
    );
    assert!(ok, "{stderr}");
    let dev_file = db.dir.path().join("data/master.key");
    assert!(dev_file.exists(), "the development run generated its key");

    let (ok, _, stderr) = run(keygate(&db, &[("KEYGATE_ENV", "production")]), &["serve"]);
    assert!(!ok, "production refused to start on the leftover development key");
    assert!(stderr.contains("master_key_missing") && stderr.contains("never used in production"), "{stderr}");
    assert!(stderr.contains("KEYGATE_MASTER_KEY_FILE="), "it says how to use that file on purpose: {stderr}");
    let (ok, stdout, _) = run(keygate(&db, &[("KEYGATE_ENV", "production")]), &["doctor"]);
    assert!(!ok && stdout.contains("master_key_missing"), "doctor is red too:\n{stdout}");

    let file = dev_file.display().to_string();
    let vars = [("KEYGATE_ENV", "production"), ("KEYGATE_MASTER_KEY_FILE", file.as_str())];
    let (ok, stdout, stderr) = run(keygate(&db, &vars), &["doctor"]);
    assert!(ok, "configured on purpose, the same file is fine:\n{stdout}{stderr}");

    let vars = [("KEYGATE_ENV", "production"), ("KEYGATE_MASTER_KEY", KEY_A)];
    let (_, stdout, stderr) = run(keygate(&db, &vars), &["doctor"]);
    assert!(
        stderr.contains("ignores the development key file") || stdout.contains("ignores the development key file"),
        "{stdout}{stderr}"
    );
}

#[test]
fn malformed_master_keys_get_their_own_errors() {
    let db = TestDb::sqlite();
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("KEYGATE_MASTER_KEY", "abc123")], "must be 64 hex characters"),
        (&[("KEYGATE_MASTER_KEY", &"zz".repeat(32))], "must be hex"),
        (&[("KEYGATE_MASTER_KEYS", KEY_A)], "must be `id:hex`"),
        (&[("KEYGATE_MASTER_KEY", KEY_A), ("KEYGATE_MASTER_KEYS", "a:00")], "set exactly one"),
    ];
    for (vars, expected) in cases {
        let (ok, _, stderr) = run(keygate(&db, vars), &["serve"]);
        assert!(!ok, "{vars:?} was accepted");
        assert!(stderr.contains(expected), "{vars:?}: {stderr}");
        assert!(stderr.contains("[master_key_"), "{stderr}");
        assert!(!stderr.contains(KEY_A), "errors never echo key material: {stderr}");
    }
}

both_backends!(doctor_is_green_on_a_fresh_data_dir_and_red_once_the_master_key_changes);

async fn doctor_is_green_on_a_fresh_data_dir_and_red_once_the_master_key_changes(db: TestDb) {
    let a = [("KEYGATE_MASTER_KEY", KEY_A)];
    let (ok, stdout, stderr) = run(keygate(&db, &a), &["doctor"]);
    assert!(ok, "fresh doctor is green:\n{stdout}{stderr}");
    seed(&db, &format!("a:{KEY_A}"), 2).await;
    let (ok, stdout, _) = run(keygate(&db, &a), &["doctor"]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("2 credential(s) open"), "{stdout}");

    let (ok, stdout, _) = run(keygate(&db, &[("KEYGATE_MASTER_KEY", KEY_B)]), &["doctor"]);
    assert!(!ok, "doctor is red with another key:\n{stdout}");
    assert!(stdout.contains("master_key_mismatch") && stdout.contains("does not match this database"), "{stdout}");
    let (ok, _, stderr) = run(keygate(&db, &[("KEYGATE_MASTER_KEY", KEY_B)]), &["serve"]);
    assert!(!ok && stderr.contains("master_key_mismatch"), "serve refuses at boot: {stderr}");
}

/// `KEYGATE_METRICS_LISTEN`: `/metrics` is served there, without a credential, and is
/// absent (404 problem+json) from the main listener; SIGTERM stops both.
#[test]
fn metrics_listen_serves_metrics_apart_from_the_api() {
    let db = TestDb::sqlite();
    let vars =
        [("KEYGATE_MASTER_KEY", KEY_A), ("KEYGATE_LISTEN", "127.0.0.1:0"), ("KEYGATE_METRICS_LISTEN", "127.0.0.1:0")];
    let mut child = keygate(&db, &vars).arg("serve").stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let (mut api, mut metrics) = (None, None);
    while api.is_none() || metrics.is_none() {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited early:\n{log}");
        log.push_str(&line);
        if let Some(rest) = line.split("keygate listening on http://").nth(1) {
            api = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.split("serving /metrics on http://").nth(1) {
            metrics = Some(rest.trim().trim_end_matches("/metrics").to_owned());
        }
    }
    let (api, metrics) = (api.unwrap(), metrics.unwrap());
    assert_ne!(api, metrics);
    let get = |addr: &str, path: &str| {
        let mut conn = std::net::TcpStream::connect(addr).unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        reply
    };
    let scraped = get(&metrics, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    assert!(scraped.contains("keygate_proxy_requests_total"), "{scraped}");
    let absent = get(&api, "/metrics");
    assert!(absent.starts_with("HTTP/1.1 404"), "{absent}");
    assert!(absent.contains("application/problem+json") && absent.contains(r#""code":"not_found""#), "{absent}");
    assert!(get(&api, "/healthz").starts_with("HTTP/1.1 200"), "the API is served as usual");
    assert!(get(&metrics, "/healthz").starts_with("HTTP/1.1 404"), "the metrics listener serves /metrics alone");

    let kill = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert!(std::net::TcpStream::connect(&metrics).is_err(), "the metrics listener is closed too");
}
