//! The last line of defence: scrubs known secret shapes out of any text (log lines,
//! provider error bodies) before it leaves keygate. Secret types are the first line;
//! this catches what slipped past them, e.g. a key echoed in an upstream error.

use regex::{Captures, Regex};
use std::borrow::Cow;
use std::sync::LazyLock;

/// What a scrubbed value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

static PATTERNS: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let alternatives = [
        // Anthropic, OpenAI (sk-, sk-proj-), OpenRouter (sk-or-): `sk-` and a long tail.
        r"(?P<sk>sk-[A-Za-z0-9_\-]{8,})",
        // AWS access key ids.
        r"(?P<aws>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)",
        // keygate tokens.
        r"(?P<kg>\bkg_[A-Za-z0-9]+_[A-Za-z0-9]+)",
        // Google API keys.
        r"(?P<google>\bAIza[0-9A-Za-z_\-]{30,})",
        // Mapbox tokens (pk./sk./tk. followed by a JWT-like body).
        r"(?P<mapbox>\b(?:pk|sk|tk)\.eyJ[A-Za-z0-9_\-\.]+)",
        // JSON web tokens.
        r"(?P<jwt>\beyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*)",
        // Resend keys.
        r"(?P<resend>\bre_[A-Za-z0-9]{8,}_[A-Za-z0-9_]+)",
        // GitHub tokens: fine-grained (github_pat_), classic (ghp_), OAuth, app and refresh.
        r"(?P<github>\b(?:github_pat_|gh[pousr]_)[A-Za-z0-9_]{16,})",
        // Bearer / Basic credentials anywhere.
        r"(?P<scheme>(?i:\b(?:bearer|basic)\s+))(?P<schemeval>[A-Za-z0-9\-\._~\+/]+=*)",
        // Header-like `x-api-key: value`, `api_key=value`, `"client_secret": "value"`.
        r#"(?P<field>(?i:\b(?:x-api-key|x-goog-api-key|api[_-]?key|apikey|access[_-]?token|client[_-]?secret|secret[_-]?access[_-]?key|password|passwd|secret)\b)["']?\s*[:=]\s*["']?)(?P<fieldval>[^\s"'&,;}]+)"#,
        // `key=` and `token=` in URL query strings.
        r"(?P<query>[?&](?i:key|token|access_token|api_key|apikey|sig|signature)=)(?P<queryval>[^&\s\x22']+)",
        // 64 hex characters: the shape of a master key.
        r"(?P<hex>\b[0-9a-fA-F]{64}\b)",
    ];
    Regex::new(&alternatives.join("|")).ok()
});

/// Replaces every secret-shaped substring of `text` with [`REDACTED`], keeping the
/// recognisable prefix (`sk-ant-`, `Bearer `, `key=`) so the log still says what it was.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let Some(re) = PATTERNS.as_ref() else {
        // The pattern is a constant covered by tests; if it ever failed to compile we
        // would rather drop the text than leak it.
        return Cow::Borrowed(REDACTED);
    };
    re.replace_all(text, |caps: &Captures<'_>| {
        if let Some(m) = caps.name("sk") {
            let prefix = if m.as_str().starts_with("sk-ant-") { "sk-ant-" } else { "sk-" };
            return format!("{prefix}{REDACTED}");
        }
        for (keep, _value) in [("scheme", "schemeval"), ("field", "fieldval"), ("query", "queryval")] {
            if let Some(m) = caps.name(keep) {
                return format!("{}{REDACTED}", m.as_str());
            }
        }
        if caps.name("kg").is_some() {
            return format!("kg_{REDACTED}");
        }
        REDACTED.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_compiles() {
        assert!(PATTERNS.is_some());
    }

    #[test]
    fn scrubs_every_known_shape() {
        let canaries = [
            "sk-ant-api03-CANARYcanary1234567890",
            "sk-proj-CANARYabcdefghijklmnop",
            "sk-or-v1-CANARY0123456789abcdef",
            "AKIAIOSFODNN7EXAMPLE",
            "kg_01HXYZpublic_CANARYsecret0123456789",
            "AIzaSyCANARY-0123456789abcdefghijklmnop",
            "pk.eyJ1IjoiY2FuYXJ5IiwiYSI6ImNhbmFyeSJ9.CANARYsig",
            "re_CANARY123_abcdefghijk",
            "github_pat_11CANARY0123456789_abcdefghijklmnopqrstuvwxyz",
            "ghp_CANARY0123456789abcdefghijklmnopqrstu",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.CANARYsignature",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        ];
        for canary in canaries {
            let line = format!("calling upstream with {canary} now");
            let out = scrub(&line);
            assert!(!out.contains(canary), "{canary} survived: {out}");
            assert!(!out.contains("CANARY"), "part of {canary} survived: {out}");
            assert!(out.contains("calling upstream with") && out.contains("now"));
        }
    }

    #[test]
    fn keeps_the_prefix_that_says_what_was_removed() {
        assert_eq!(scrub("Authorization: Bearer abc.def-123"), "Authorization: Bearer [REDACTED]");
        assert_eq!(scrub("GET /v1/tiles?style=x&key=CANARY123&z=1"), "GET /v1/tiles?style=x&key=[REDACTED]&z=1");
        assert_eq!(scrub("x-api-key: sk-ant-CANARYabcdefgh"), "x-api-key: [REDACTED]");
        assert_eq!(scrub(r#"{"client_secret":"CANARYxyz"}"#), r#"{"client_secret":"[REDACTED]"}"#);
        assert_eq!(scrub("key sk-ant-abcdefghijkl"), "key sk-ant-[REDACTED]");
    }

    #[test]
    fn leaves_ordinary_text_alone() {
        let text = "workspace 0193a1b2-... paused by admin; 3 credentials revoked";
        assert!(matches!(scrub(text), Cow::Borrowed(_)));
    }
}
