//! `keygate admin create` and `keygate config`.

use crate::support::*;
use keygate_store::testdb::TestDb;

const PASSWORD: &str = "CANARY-password-correct-horse";

#[test]
fn admin_create_reads_the_password_from_stdin() {
    let db = TestDb::sqlite();
    let vars = [("KEYGATE_MASTER_KEY", KEY_A)];
    let (ok, stdout, stderr) = run_with_stdin(
        keygate(&db, &vars),
        &["admin", "create", "--email", "root@example.com"],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("created super-admin root@example.com"), "{stdout}");
    let (ok, _, stderr) =
        run_with_stdin(keygate(&db, &vars), &["admin", "create", "--email", "root@example.com"], PASSWORD);
    assert!(!ok && stderr.contains("[conflict]") && stderr.contains("already exists"), "{stderr}");
    let (ok, _, stderr) =
        run_with_stdin(keygate(&db, &vars), &["admin", "create", "--email", "b@example.com"], "short\n");
    assert!(!ok && stderr.contains("at least 12 characters"), "{stderr}");
    for out in [&stdout, &stderr] {
        assert!(!out.contains("CANARY"), "{out}");
    }
}

#[test]
fn config_show_names_sources_and_hides_secrets() {
    let db = TestDb::sqlite();
    let vars = [("KEYGATE_LISTEN", "127.0.0.1:9999"), ("KEYGATE_MASTER_KEY", KEY_A)];
    let (ok, stdout, _) = run(keygate(&db, &vars), &["config", "show"]);
    assert!(ok);
    assert!(stdout.contains("127.0.0.1:9999") && stdout.contains("environment variable KEYGATE_LISTEN"), "{stdout}");
    assert!(stdout.contains("(set; hidden)") && !stdout.contains(KEY_A), "{stdout}");
    let (ok, _, stderr) = run(keygate(&db, &[("KEYGATE_LISTEN", "nope")]), &["serve"]);
    assert!(!ok && stderr.contains("KEYGATE_LISTEN"), "{stderr}");
    let (ok, example, _) = run(keygate(&db, &[]), &["config", "example"]);
    assert!(ok && example.contains("KEYGATE_MASTER_KEY_FILE"));
}
