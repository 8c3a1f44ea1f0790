//! Per-record cost of the vault: sealing and opening a credential with its workspace's
//! data key (every cold call opens one), and unwrapping a data key with the master key
//! (once per workspace per cache lifetime). `bench/run.sh` runs it; `cargo test` runs
//! each function once so a broken benchmark fails the suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate_vault::{CredentialContext, DataKey, DataKeyContext, KeyEncryptionKeys, Keyring, SecretText};
use uuid::Uuid;

const MASTER_KEY: &str = "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf";

fn vault(c: &mut Criterion) {
    let data_key = DataKey::generate(Uuid::now_v7());
    let secret = SecretText::new("sk-proj-bench0000000000000000000000000000000000000000".into());
    let owner = format!("workspace:{}", Uuid::now_v7());
    let context = CredentialContext {
        key_owner: &owner,
        owner: &owner,
        credential_id: Uuid::now_v7(),
        provider: "openai",
        secret_version: 1,
    };
    let sealed = data_key.seal_secret(&secret, &context).unwrap();
    c.bench_function("seal a credential", |b| b.iter(|| data_key.seal_secret(black_box(&secret), &context).unwrap()));
    c.bench_function("open a credential", |b| b.iter(|| data_key.open_secret(black_box(&sealed), &context).unwrap()));

    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let keyring = Keyring::from_hex("bench", MASTER_KEY).unwrap();
    let dk_context = DataKeyContext { key_owner: &owner, data_key_id: data_key.id() }.to_bytes();
    let wrapped = runtime.block_on(keyring.seal(data_key.expose_bytes(), &dk_context)).unwrap();
    c.bench_function("unwrap a data key", |b| {
        b.iter(|| runtime.block_on(keyring.open(black_box(&wrapped), &dk_context)).unwrap())
    });
}

/// What scrubbing a call's answer of echoed keys costs: building the scrubber for the
/// injected key, and scanning a typical answer (no echo in it).
fn echo(c: &mut Criterion) {
    use keygate_vault::echo::EchoScrubber;
    let key = "sk-proj-bench0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH";
    let answer = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today? This is a typical short answer of a few hundred bytes."},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
    c.bench_function("echo scrubber: build", |b| b.iter(|| EchoScrubber::new(black_box(&[key]))));
    let scrubber = EchoScrubber::new(&[key]).unwrap();
    c.bench_function("echo scrubber: scan a 330-byte answer", |b| b.iter(|| scrubber.found_in(black_box(answer))));
}

criterion_group!(benches, vault, echo);
criterion_main!(benches);
