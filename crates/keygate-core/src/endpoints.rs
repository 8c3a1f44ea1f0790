//! Shared endpoints: the calls a key may serve for someone who does not own it (a
//! workspace's shared key, the operator's demo or platform key). Each provider lists
//! them in the catalog as `METHOD /path/pattern`; anything else — key, account, billing
//! or organisation management — is only for the key's owner.
//!
//! A pattern is matched segment by segment against the path as the provider reads it
//! (percent-decoded): `*` stands for any run of characters within one segment (so
//! `/v1beta/models/*:generateContent` matches any model), and a final `**` for any
//! number of further segments, including none.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One shared endpoint: a method (or `*` for any) and a path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    method: String,
    segments: Vec<String>,
    /// The pattern ends with `**`.
    rest: bool,
}

/// A pattern that does not read as `METHOD /path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shared endpoint `{0}` must read `METHOD /path`, e.g. `POST /v1/chat/completions` or `GET /v4/**`")]
pub struct BadEndpoint(pub String);

impl Endpoint {
    pub fn parse(text: &str) -> Result<Self, BadEndpoint> {
        let bad = || BadEndpoint(text.to_owned());
        let (method, path) = text.trim().split_once(' ').ok_or_else(bad)?;
        let method = method.trim().to_ascii_uppercase();
        let path = path.trim();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase() || b == b'*') || !path.starts_with('/') {
            return Err(bad());
        }
        let mut segments: Vec<String> = path[1..].split('/').map(str::to_owned).collect();
        let rest = segments.last().is_some_and(|s| s == "**");
        if rest {
            segments.pop();
        }
        if segments.iter().any(|s| s == "**" || s == "." || s == "..") {
            return Err(bad());
        }
        Ok(Self { method, segments, rest })
    }

    /// Whether a call with `method` on `path` (percent-decoded, leading `/` optional,
    /// no query) is this endpoint.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.method != "*" && !self.method.eq_ignore_ascii_case(method) {
            return false;
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() < self.segments.len() || (!self.rest && parts.len() != self.segments.len()) {
            return false;
        }
        self.segments.iter().zip(&parts).all(|(pattern, part)| glob(pattern, part))
    }
}

/// `*` matches any run of characters (within one segment).
fn glob(pattern: &str, text: &str) -> bool {
    let Some((head, tail)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut rest) = text.strip_prefix(head) else {
        return false;
    };
    // Try every place the next literal part could start (patterns here are short).
    loop {
        if glob(tail, rest) {
            return true;
        }
        let mut chars = rest.chars();
        if chars.next().is_none() {
            return false;
        }
        rest = chars.as_str();
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} /{}", self.method, self.segments.join("/"))?;
        if self.rest {
            f.write_str(if self.segments.is_empty() { "**" } else { "/**" })?;
        }
        Ok(())
    }
}

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Endpoint::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(text: &str) -> Endpoint {
        Endpoint::parse(text).unwrap()
    }

    #[test]
    fn patterns_match_segment_by_segment() {
        let chat = ep("POST /v1/chat/completions");
        assert!(chat.matches("POST", "/v1/chat/completions"));
        assert!(chat.matches("post", "v1/chat/completions"));
        assert!(!chat.matches("GET", "/v1/chat/completions"));
        assert!(!chat.matches("POST", "/v1/chat/completions/extra"));
        assert!(!chat.matches("POST", "/v1/chat"));

        let gemini = ep("POST /v1beta/models/*:generateContent");
        assert!(gemini.matches("POST", "/v1beta/models/gemini-2.0-flash:generateContent"));
        assert!(!gemini.matches("POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent"));
        assert!(!gemini.matches("POST", "/v1beta/models/a/b:generateContent"), "* stays within a segment");

        let tiles = ep("GET /v4/**");
        assert!(tiles.matches("GET", "/v4/mapbox.satellite/1/0/0.png"));
        assert!(tiles.matches("GET", "/v4"));
        assert!(!tiles.matches("GET", "/v40/x"));
        assert!(!tiles.matches("GET", "/tokens/v2"));
        assert_eq!(tiles.to_string(), "GET /v4/**");

        let model = ep("GET /v1/models/*");
        assert!(model.matches("GET", "/v1/models/gpt-4o"));
        assert!(!model.matches("GET", "/v1/models"));
    }

    #[test]
    fn malformed_patterns_are_refused() {
        for bad in ["/v1/x", "POST v1/x", "POST /v1/**/x", "POST /v1/../admin", "P0ST /x"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
