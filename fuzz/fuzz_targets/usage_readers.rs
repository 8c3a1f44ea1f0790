//! The SSE splitter and the usage reader see whatever a provider sends: they must never
//! panic, and counts are only ever what a document says.
#![no_main]

use keygate_core::usage::{sse_data, Dialect, Report, Tokens};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut tokens = Tokens::default();
    for report in sse_data(&text) {
        for dialect in [Dialect::OpenAi, Dialect::Anthropic, Dialect::Gemini, Dialect::Other] {
            tokens.observe(dialect, &report);
        }
        let _ = report.model();
        let _ = report.text_bytes();
        let _ = report.is_usage_only_chunk();
    }
    if let Some(report) = Report::parse(data) {
        tokens.observe(Dialect::OpenAi, &report);
    }
    tokens.estimate_unreported(data.len(), data.len());
});
