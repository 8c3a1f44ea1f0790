//! The path and query of a proxied call, checked before anything is forwarded: the
//! provider gets the caller's path and never more. Dot segments and backslashes (raw or
//! percent-encoded) and encoded slashes are refused, so a base URL's path prefix
//! (`http://gw/egress/openai`) can never be escaped; query parameters are compared by
//! their decoded names, so `?k%65y=` cannot smuggle a second `key` past the injected one.
//!
//! Pure functions over strings, so they can be fuzzed on their own.

use std::fmt;

/// A proxied path that is safe to append to a provider's base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPath {
    /// As the caller sent it (still percent-encoded), without a leading `/`: what goes
    /// upstream.
    raw: String,
    /// Percent-decoded: what the provider will read, for matching shared endpoints.
    decoded: String,
}

/// Why a proxied path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `.` or `..` as a segment, raw or encoded.
    DotSegment,
    /// A backslash, raw or encoded.
    Backslash,
    /// `%2F`: a slash the caller hid inside a segment.
    EncodedSlash,
    /// A malformed escape or bytes that are not UTF-8.
    BadEncoding,
    /// A control character (NUL, CR, LF, ...).
    ControlCharacter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DotSegment => "the path has a `.` or `..` segment (raw or percent-encoded)",
            Self::Backslash => "the path has a backslash (raw or percent-encoded)",
            Self::EncodedSlash => "the path has an encoded slash (%2F)",
            Self::BadEncoding => "the path is not valid percent-encoded UTF-8",
            Self::ControlCharacter => "the path has a control character",
        })
    }
}

impl std::error::Error for PathError {}

impl ProxyPath {
    /// Checks `raw`, the part of the request path after `/proxy/{provider}` (leading
    /// slashes ignored), exactly as it arrived.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        let raw = raw.trim_start_matches('/');
        // Most paths are plain ASCII without an escape: decoded, they are themselves, and
        // the checks below come down to these (same refusals, same order).
        if raw.bytes().all(|b| b.is_ascii() && b != b'%') {
            if raw.contains('\\') {
                return Err(PathError::Backslash);
            }
            if raw.bytes().any(|b| b.is_ascii_control()) {
                return Err(PathError::ControlCharacter);
            }
            if raw.split('/').any(|segment| segment == "." || segment == "..") {
                return Err(PathError::DotSegment);
            }
            return Ok(Self { raw: raw.to_owned(), decoded: raw.to_owned() });
        }
        Self::parse_escaped(raw)
    }

    /// [`Self::parse`] for any path: decoded, then checked.
    fn parse_escaped(raw: &str) -> Result<Self, PathError> {
        if raw.contains('\\') {
            return Err(PathError::Backslash);
        }
        let bytes = percent_decode(raw).ok_or(PathError::BadEncoding)?;
        let decoded = String::from_utf8(bytes).map_err(|_| PathError::BadEncoding)?;
        if decoded.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        if decoded.contains('\\') {
            return Err(PathError::Backslash);
        }
        if decoded.matches('/').count() != raw.matches('/').count() {
            return Err(PathError::EncodedSlash);
        }
        if decoded.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(PathError::DotSegment);
        }
        Ok(Self { raw: raw.to_owned(), decoded })
    }

    /// As the caller sent it (percent-encoded), without a leading `/`.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Percent-decoded, with a leading `/`-less form: what the provider reads.
    pub fn decoded(&self) -> &str {
        &self.decoded
    }
}

/// Decodes `%XX` escapes; `None` for a malformed one.
pub fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            // Two hex digits, nothing else (`u8::from_str_radix` would take `%+6`).
            let hex = bytes.get(i + 1..i + 3)?;
            let digit = |b: u8| char::from(b).to_digit(16);
            out.push(u8::try_from(digit(hex[0])? * 16 + digit(hex[1])?).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The query's `name=value` pairs (still encoded), without any whose decoded name is
/// `name` in any letter case: the caller cannot put a second credential parameter next
/// to the injected one. A pair whose name does not decode is dropped too.
pub fn query_without(query: &str, name: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map_or_else(|| (p.to_owned(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
        .filter(|(k, _)| {
            let plus_as_space = k.replace('+', " ");
            match percent_decode(&plus_as_space).and_then(|b| String::from_utf8(b).ok()) {
                Some(decoded) => !decoded.trim().eq_ignore_ascii_case(name),
                None => false,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escape_is_two_hex_digits() {
        assert_eq!(percent_decode("a%41%6a%6A").as_deref(), Some(&b"aAjj"[..]));
        for bad in ["%+6", "%-1", "% 1", "%4", "%", "%g0", "%0g", "%\u{e9}1"] {
            assert_eq!(percent_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_plain_ascii_path_reads_as_the_general_one() {
        let mut paths: Vec<String> = [
            "v1/chat/completions",
            "/v1/models",
            "",
            "/",
            "a/./b",
            "a/../b",
            ".",
            "..",
            "...",
            "a/..b/c",
            "a\\b",
            "a\u{1}b",
            "a\u{7f}b",
            "a\tb",
            "v1/models/gpt-4o:generateContent",
            "a//b",
            "a/.",
            "../x",
            "x/..",
            "v1/%2e%2e/x",
            "caf\u{e9}",
            "a%20b",
            "\u{85}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Every two-byte path over an alphabet of the bytes that matter.
        let alphabet = ['a', '/', '.', '\\', '\u{0}', '\u{1f}', '\u{7f}', '%', '~', ' '];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    paths.push(format!("{a}{b}{c}"));
                }
            }
        }
        for path in &paths {
            let trimmed = path.trim_start_matches('/');
            assert_eq!(ProxyPath::parse(path), ProxyPath::parse_escaped(trimmed), "{path:?}");
        }
    }

    #[test]
    fn ordinary_paths_pass_unchanged() {
        let p = ProxyPath::parse("/v1/chat/completions").unwrap();
        assert_eq!((p.raw(), p.decoded()), ("v1/chat/completions", "v1/chat/completions"));
        let p = ProxyPath::parse("v1beta/models/gemini-2.0-flash:generateContent").unwrap();
        assert_eq!(p.decoded(), "v1beta/models/gemini-2.0-flash:generateContent");
        let p = ProxyPath::parse("geocoding/v5/mapbox.places/Paris%20France.json").unwrap();
        assert_eq!(
            (p.raw(), p.decoded()),
            ("geocoding/v5/mapbox.places/Paris%20France.json", "geocoding/v5/mapbox.places/Paris France.json")
        );
        assert!(ProxyPath::parse("v1/files/a..b").is_ok(), "dots inside a segment are fine");
    }

    #[test]
    fn every_form_of_escape_is_refused() {
        for (path, why) in [
            ("../anthropic/v1/messages", PathError::DotSegment),
            ("v1/../../admin", PathError::DotSegment),
            ("..%2F..%2Fadmin", PathError::EncodedSlash),
            ("%2e%2e/anthropic", PathError::DotSegment),
            ("%2E%2E/anthropic", PathError::DotSegment),
            ("v1/./models", PathError::DotSegment),
            ("v1/%2e/models", PathError::DotSegment),
            ("..\\anthropic", PathError::Backslash),
            ("..%5canthropic", PathError::Backslash),
            ("v1%2Fmodels", PathError::EncodedSlash),
            ("v1/%ZZ", PathError::BadEncoding),
            ("v1/%FF", PathError::BadEncoding),
            ("v1/%0d%0aHost:x", PathError::ControlCharacter),
            ("v1/%00", PathError::ControlCharacter),
        ] {
            assert_eq!(ProxyPath::parse(path), Err(why), "{path}");
        }
    }

    #[test]
    fn query_names_are_compared_decoded() {
        let pairs = query_without("k%65y=evil&key=also&KEY=x&q=1&style=a%26b&flag", "key");
        assert_eq!(
            pairs,
            vec![("q".into(), "1".into()), ("style".into(), "a%26b".into()), ("flag".into(), String::new())]
        );
        assert_eq!(query_without("access%5Ftoken=x&access_token+=y", "access_token"), vec![]);
        assert_eq!(query_without("%ZZ=1&a=2", "key"), vec![("a".into(), "2".into())]);
    }
}
