//! What the prompt guard costs per call: one scan of an outbound AI request body with
//! the default kinds (private keys, AWS access keys, card numbers) and with every kind,
//! on chat bodies of 1 KB, 100 KB and 1 MB of ordinary text with numbers in it and no
//! secret (the common case), plus redacting one that has a secret. `cargo test` runs each
//! function once so a broken benchmark fails the suite.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keygate_core::catalog::Catalog;
use keygate_core::guard::{redact, KeyShape, Kind, PromptGuard, Scanner};

/// An OpenAI chat body of about `size` bytes: prose with order ids, dates, prices and
/// phone numbers, split into messages of about 2 KB.
fn chat_body(size: usize) -> Vec<u8> {
    let line = "Order 88213 shipped on 2024-03-15 to Jane (tel. +1 415 555 0132); invoice INV-2024-000731 \
                totals $1,249.99, tracking 1Z999AA10123456784. The quick brown fox jumps over the lazy dog. ";
    let mut messages = Vec::new();
    let mut total = 0;
    while total < size {
        let mut content = String::new();
        while content.len() < 2048.min(size) && total + content.len() < size {
            content.push_str(line);
        }
        total += content.len() + 30;
        messages.push(
            serde_json::json!({"role": if messages.len() % 2 == 0 { "user" } else { "assistant" }, "content": content}),
        );
    }
    serde_json::to_vec(&serde_json::json!({"model": "gpt-4o", "messages": messages})).unwrap()
}

fn guard(c: &mut Criterion) {
    let shapes = KeyShape::of_catalog(&Catalog::builtin().unwrap());
    let default = Scanner::new(PromptGuard::default().kinds(), &shapes).unwrap();
    let every = Scanner::new(Kind::ALL.into_iter().collect(), &shapes).unwrap();
    let mut group = c.benchmark_group("prompt guard: scan");
    for (label, size) in [("1 KB", 1 << 10), ("100 KB", 100 << 10), ("1 MB", 1 << 20)] {
        let body = chat_body(size);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("default kinds", label), &body, |b, body| {
            b.iter(|| assert!(default.scan(black_box(body)).is_empty()))
        });
        group.bench_with_input(BenchmarkId::new("every kind", label), &body, |b, body| {
            b.iter(|| assert!(every.scan(black_box(body)).is_empty()))
        });
    }
    group.finish();

    let mut body = chat_body(100 << 10);
    let at = body.len() / 2;
    body.splice(at..at, b" AKIAIOSFODNN7EXAMPLE and 4111 1111 1111 1111 ".iter().copied());
    c.bench_function("prompt guard: scan and redact 100 KB with two secrets", |b| {
        b.iter(|| {
            let findings = default.scan(black_box(&body));
            assert_eq!(findings.len(), 2);
            redact(&body, &findings)
        })
    });
}

criterion_group!(benches, guard);
criterion_main!(benches);
