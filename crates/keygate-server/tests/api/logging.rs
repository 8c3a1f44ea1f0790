//! Canary secrets logged at every level, in messages, fields, spans and Debug output,
//! through the real subscriber: none may reach the output.

use keygate_server::telemetry;
use keygate_vault::SecretText;
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const CANARIES: &[&str] = &[
    "sk-ant-api03-CANARY1aaaaaaaaaaaaaaaaaaaa",
    "sk-proj-CANARY2bbbbbbbbbbbbbbbbbbbbbbbbb",
    "AKIACANARY3XXXXXXXXX",
    "kg_01CANARY4pub_CANARY4secretsecretsecret",
    "CANARY5bearervalue.abc-def",
    "CANARY6querykey",
    "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4",
];

#[test]
fn canary_secrets_never_reach_the_log_output() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = telemetry::subscriber("trace", move || writer.clone(), false).unwrap();
    let credential = SecretText::new(CANARIES[0].to_owned());

    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", token = CANARIES[3], auth = %format!("Bearer {}", CANARIES[4]));
        let _entered = span.enter();
        tracing::trace!(key = CANARIES[0], "trace: calling upstream with {}", CANARIES[1]);
        tracing::debug!(?credential, "debug: the secret type prints its hint");
        tracing::info!(url = %format!("https://tiles.example/v1?style=x&key={}", CANARIES[5]), "info: fetching tiles");
        tracing::warn!("warn: AWS key {} rejected", CANARIES[2]);
        tracing::error!(error = %format!("upstream said: invalid x-api-key: {}", CANARIES[0]), "error: upstream failed");
        tracing::info!(master = CANARIES[6], "info: a master key slipped into a field");
    });

    let output = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    for level in ["trace:", "debug:", "info:", "warn:", "error:"] {
        assert!(output.contains(level), "the {level} event was logged:\n{output}");
    }
    assert!(output.contains("SecretText(…aaaa)"), "{output}");
    for canary in CANARIES {
        assert!(!output.contains(canary), "{canary} reached the log:\n{output}");
    }
    assert!(!output.contains("CANARY"), "part of a canary reached the log:\n{output}");
}
