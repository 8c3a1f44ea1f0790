//! The proxy path and query rules: never a panic, and an accepted path never has a dot
//! segment, a backslash or a hidden slash once decoded.
#![no_main]

use keygate_core::proxypath::{query_without, ProxyPath};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, String)| {
    let (path, query) = input;
    if let Ok(p) = ProxyPath::parse(&path) {
        let decoded = p.decoded();
        assert!(!decoded.contains('\\'));
        assert!(!decoded.split('/').any(|s| s == "." || s == ".."));
        assert_eq!(decoded.matches('/').count(), p.raw().matches('/').count());
    }
    for (name, _) in query_without(&query, "key") {
        let decoded = keygate_core::proxypath::percent_decode(&name.replace('+', " "))
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default();
        assert!(!decoded.trim().eq_ignore_ascii_case("key"));
    }
});
