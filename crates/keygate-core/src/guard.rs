//! The prompt guard's scanner: finds secrets that must never be pasted into a chat in an
//! outbound AI request body — PEM/OpenSSH private keys, AWS access key ids, Luhn-valid
//! card numbers and (opt-in) the catalog's provider key shapes — in one pass over the
//! body's bytes with one precompiled matcher, and redacts them so a JSON body stays
//! valid JSON.
//!
//! A [`Finding`] carries the kind, the byte range and where in the request it was (the
//! index of the message in an OpenAI / Anthropic / Gemini body), never the value: what
//! the guard reports, logs or audits can never carry what it found.
//!
//! Not for: deciding what to do with a finding (the service's `guard` applies the
//! policy), or scrubbing answers (keygate-vault's `echo` and `redact`).

use crate::catalog::Catalog;
use regex::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Range;

/// What the guard looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A PEM or OpenSSH private key block (`-----BEGIN … PRIVATE KEY-----`).
    PrivateKey,
    /// An AWS access key id (`AKIA` / `ASIA` + 16).
    AwsAccessKey,
    /// A payment card number: 13–19 digits of a card network's shape, passing Luhn.
    CardNumber,
    /// A key of a shape the provider catalog knows (`sk-ant-…`, `AIza…`).
    ProviderKey,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::PrivateKey, Kind::AwsAccessKey, Kind::CardNumber, Kind::ProviderKey];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PrivateKey => "private_key",
            Kind::AwsAccessKey => "aws_access_key",
            Kind::CardNumber => "card_number",
            Kind::ProviderKey => "provider_key",
        }
    }

    /// How a person reads it.
    pub fn label(self) -> &'static str {
        match self {
            Kind::PrivateKey => "a private key",
            Kind::AwsAccessKey => "an AWS access key",
            Kind::CardNumber => "a card number",
            Kind::ProviderKey => "an API key",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| format!("`{s}` is not a prompt guard kind"))
    }
}

/// A set of kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Kinds(u8);

impl Kinds {
    pub const COUNT: usize = 1 << Kind::ALL.len();

    pub fn contains(self, kind: Kind) -> bool {
        self.0 & kind.bit() != 0
    }

    pub fn insert(&mut self, kind: Kind) {
        self.0 |= kind.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A number below [`Kinds::COUNT`] naming this set (for a table of scanners).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn iter(self) -> impl Iterator<Item = Kind> {
        Kind::ALL.into_iter().filter(move |k| self.contains(*k))
    }
}

impl FromIterator<Kind> for Kinds {
    fn from_iter<I: IntoIterator<Item = Kind>>(iter: I) -> Self {
        let mut set = Kinds::default();
        for kind in iter {
            set.insert(kind);
        }
        set
    }
}

/// What the guard does with a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The call is refused (`422 prompt_blocked`).
    #[default]
    Block,
    /// Each match is replaced with `[REDACTED:<kind>]` and the call goes on.
    Redact,
    Off,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Block, Mode::Redact, Mode::Off];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Block => "block",
            Mode::Redact => "redact",
            Mode::Off => "off",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| format!("`{s}` is not block, redact or off"))
    }
}

/// The prompt guard setting (the operator's default in the policy, or a workspace's
/// override).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptGuard {
    pub mode: Mode,
    #[serde(default)]
    pub kinds: Vec<Kind>,
}

impl Default for PromptGuard {
    fn default() -> Self {
        Self { mode: Mode::Block, kinds: vec![Kind::PrivateKey, Kind::AwsAccessKey, Kind::CardNumber] }
    }
}

impl PromptGuard {
    pub fn kinds(&self) -> Kinds {
        self.kinds.iter().copied().collect()
    }

    /// Whether a body must be scanned at all.
    pub fn active(&self) -> bool {
        self.mode != Mode::Off && !self.kinds.is_empty()
    }

    /// Problems that make the setting unusable, each naming its field under `field`.
    pub fn problems(&self, field: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.mode != Mode::Off && self.kinds.is_empty() {
            problems.push(format!("{field}.kinds: name at least one kind, or set the mode to off"));
        }
        problems
    }
}

/// A provider key shape: a prefix and the whole key's minimum length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyShape {
    pub prefix: String,
    pub min_len: usize,
}

impl KeyShape {
    /// Every prefixed key shape in the catalog (a prefix several providers share once,
    /// with the smallest minimum length).
    pub fn of_catalog(catalog: &Catalog) -> Vec<KeyShape> {
        let mut shapes: Vec<KeyShape> = Vec::new();
        for provider in catalog.all() {
            for prefix in provider.key_prefixes.iter().filter(|p| !p.is_empty()) {
                let min_len = provider.min_len.max(prefix.len() + 8);
                match shapes.iter_mut().find(|s| &s.prefix == prefix) {
                    Some(s) => s.min_len = s.min_len.min(min_len),
                    None => shapes.push(KeyShape { prefix: prefix.clone(), min_len }),
                }
            }
        }
        shapes
    }
}

/// Where in the request a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The n-th (from 0) entry of `messages` (OpenAI, Anthropic), `contents` (Gemini)
    /// or `input` (OpenAI Responses).
    Message(usize),
    /// A top-level field keygate knows by name (`system`, `tools`, …).
    Field(&'static str),
    /// The body is not JSON of a shape keygate knows.
    Unknown,
}

impl Location {
    pub fn message(self) -> Option<usize> {
        match self {
            Location::Message(i) => Some(i),
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Message(i) => write!(f, "message {i}"),
            Location::Field(name) => write!(f, "`{name}`"),
            Location::Unknown => f.write_str("message index unknown"),
        }
    }
}

/// One secret found: what and where, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    pub range: Range<usize>,
    pub location: Location,
    /// Inside a JSON string (or the body is not JSON): the replacement needs no quotes.
    in_string: bool,
}

/// Top-level JSON fields whose entries are the conversation's messages.
const MESSAGE_ARRAYS: &[&str] = &["messages", "contents", "input"];
/// Other top-level fields a finding is reported in by name (never a caller's own name).
const KNOWN_FIELDS: &[&str] = &[
    "system",
    "systemInstruction",
    "system_instruction",
    "instructions",
    "tools",
    "functions",
    "prompt",
    "input",
    "messages",
    "contents",
    "toolConfig",
    "tool_choice",
    "metadata",
];

/// The precompiled matcher for one set of kinds.
#[derive(Debug)]
pub struct Scanner {
    regex: Option<Regex>,
    shapes: Vec<KeyShape>,
}

/// A PEM private key block: header, body (base64, PEM headers, JSON-escaped line
/// breaks) and footer; a block cut short runs to the end of its JSON string.
const PEM: &str = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----(?:[A-Za-z0-9+/=\\:,. \t\r\n-]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\\:,. \t\r\n-]*)";
const AWS: &str = r"(?:AKIA|ASIA)[A-Z0-9]{16}";
/// A run of 13 or more digits, single spaces or dashes between them.
const CARD: &str = r"[0-9](?:[ -]?[0-9]){12,}";

impl Scanner {
    /// A scanner for `kinds`; `shapes` are the provider key shapes (used only with
    /// [`Kind::ProviderKey`]).
    pub fn new(kinds: Kinds, shapes: &[KeyShape]) -> Result<Self, regex::Error> {
        let mut parts = Vec::new();
        if kinds.contains(Kind::PrivateKey) {
            parts.push(format!("(?P<pk>{PEM})"));
        }
        if kinds.contains(Kind::AwsAccessKey) {
            parts.push(format!("(?P<aws>{AWS})"));
        }
        if kinds.contains(Kind::CardNumber) {
            parts.push(format!("(?P<card>{CARD})"));
        }
        let mut shapes = if kinds.contains(Kind::ProviderKey) { shapes.to_vec() } else { Vec::new() };
        shapes.sort_by_key(|s| std::cmp::Reverse(s.prefix.len()));
        if !shapes.is_empty() {
            let prefixes: Vec<String> = shapes.iter().map(|s| regex::escape(&s.prefix)).collect();
            parts.push(format!("(?P<prov>(?:{})[A-Za-z0-9_.-]+)", prefixes.join("|")));
        }
        let regex = if parts.is_empty() {
            None
        } else {
            Some(RegexBuilder::new(&format!("(?-u){}", parts.join("|"))).size_limit(1 << 24).build()?)
        };
        Ok(Self { regex, shapes })
    }

    /// Every secret in `body`, in order, without overlaps.
    pub fn scan(&self, body: &[u8]) -> Vec<Finding> {
        let Some(regex) = &self.regex else { return Vec::new() };
        let mut found = Vec::new();
        for caps in regex.captures_iter(body) {
            let push = |found: &mut Vec<Finding>, kind, range| {
                found.push(Finding { kind, range, location: Location::Unknown, in_string: true })
            };
            if let Some(m) = caps.name("pk") {
                push(&mut found, Kind::PrivateKey, pem_range(body, m.range()));
            } else if let Some(m) = caps.name("aws") {
                if starts_word(body, m.start()) && ends_word(body, m.end()) {
                    push(&mut found, Kind::AwsAccessKey, m.range());
                }
            } else if let Some(m) = caps.name("card") {
                for range in cards(body, m.range()) {
                    push(&mut found, Kind::CardNumber, range);
                }
            } else if let Some(m) = caps.name("prov") {
                if let Some(range) = self.provider_key(body, m.range()) {
                    push(&mut found, Kind::ProviderKey, range);
                }
            }
        }
        if !found.is_empty() {
            locate(body, &mut found);
        }
        found
    }

    /// A provider-shaped token, if it is one: word-bounded, long enough for its prefix,
    /// and with a digit after the prefix (real keys have them; `sk-learn-docs` does not).
    fn provider_key(&self, body: &[u8], mut range: Range<usize>) -> Option<Range<usize>> {
        while range.end > range.start && body[range.end - 1] == b'.' {
            range.end -= 1;
        }
        let token = &body[range.clone()];
        let shape = self.shapes.iter().find(|s| token.starts_with(s.prefix.as_bytes()))?;
        let rest = &token[shape.prefix.len()..];
        let ok = token.len() >= shape.min_len
            && rest.iter().any(u8::is_ascii_digit)
            && rest.iter().any(u8::is_ascii_alphabetic)
            && starts_word(body, range.start)
            && ends_word(body, range.end);
        ok.then_some(range)
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether a match may start at `at`: not glued to a word before it. A JSON escape
/// (`\n`, `\t`, `\r`) before it counts as a break.
fn starts_word(body: &[u8], at: usize) -> bool {
    match at.checked_sub(1).map(|i| body[i]) {
        None => true,
        Some(b) if !is_word(b) => true,
        Some(b'n' | b't' | b'r' | b'b' | b'f') => at >= 2 && body[at - 2] == b'\\',
        Some(_) => false,
    }
}

/// Whether a match may end at `end`: not glued to a word after it.
fn ends_word(body: &[u8], end: usize) -> bool {
    body.get(end).is_none_or(|b| !is_word(*b))
}

/// A PEM match, never ending halfway through a JSON escape (a block cut short that
/// runs into `\"` must leave the backslash's partner alone).
fn pem_range(body: &[u8], mut range: Range<usize>) -> Range<usize> {
    let trailing = body[range.clone()].iter().rev().take_while(|b| **b == b'\\').count();
    if trailing % 2 == 1 {
        range.end -= 1;
    }
    range
}

/// The card numbers in a run of digits with single spaces or dashes between them: a
/// window of its groups laid out as cards are written (one block of 13–19 digits, or
/// 4-4-4-4 with an optional short last group, 4-6-5, 4-6-4), with one kind of separator,
/// of a card network's prefix and length, passing Luhn, and not glued to a word, a
/// decimal point or a `+` (a phone number).
fn cards(body: &[u8], run: Range<usize>) -> Vec<Range<usize>> {
    // Groups: (range, separator before it).
    let mut groups: Vec<(Range<usize>, u8)> = Vec::new();
    let mut start = run.start;
    let mut sep = 0u8;
    for i in run.clone() {
        if !body[i].is_ascii_digit() {
            groups.push((start..i, sep));
            sep = body[i];
            start = i + 1;
        }
    }
    groups.push((start..run.end, sep));
    let bounded_before = |at: usize| {
        if at > run.start {
            return true; // a separator
        }
        let before = at.checked_sub(1).map(|i| body[i]);
        let decimal = matches!(before, Some(b'.' | b',')) && at >= 2 && body[at - 2].is_ascii_digit();
        starts_word(body, at) && before != Some(b'+') && !decimal
    };
    let bounded_after = |end: usize| {
        if end < run.end {
            return true;
        }
        let decimal = matches!(body.get(end), Some(b'.' | b',')) && body.get(end + 1).is_some_and(u8::is_ascii_digit);
        ends_word(body, end) && !decimal
    };
    let mut out = Vec::new();
    let mut first = 0;
    while first < groups.len() {
        let mut matched = None;
        for last in (first..groups.len().min(first + 5)).rev() {
            let window = &groups[first..=last];
            let lens: Vec<usize> = window.iter().map(|(r, _)| r.len()).collect();
            let one_separator = window.iter().skip(1).all(|(_, s)| *s == window.get(1).map_or(0, |(_, s)| *s));
            let range = window[0].0.start..window[window.len() - 1].0.end;
            if one_separator
                && card_layout(&lens)
                && bounded_before(range.start)
                && bounded_after(range.end)
                && card_number(&body[range.clone()])
            {
                matched = Some((last, range));
                break;
            }
        }
        match matched {
            Some((last, range)) => {
                out.push(range);
                first = last + 1;
            }
            None => first += 1,
        }
    }
    out
}

fn card_layout(lens: &[usize]) -> bool {
    match lens {
        [n] => (13..=19).contains(n),
        [4, 4, 4, 4] | [4, 6, 5] | [4, 6, 4] => true,
        [4, 4, 4, 4, n] | [4, 4, 4, n] => (1..=3).contains(n),
        _ => false,
    }
}

/// Digits (separators skipped) of a card network's prefix and length, passing Luhn.
fn card_number(text: &[u8]) -> bool {
    let digits: Vec<u8> = text.iter().filter(|b| b.is_ascii_digit()).map(|b| b - b'0').collect();
    let len = digits.len();
    let prefix = |n: usize| digits.iter().take(n).fold(0u32, |acc, d| acc * 10 + u32::from(*d));
    let network = match digits.first() {
        Some(2) => (2221..=2720).contains(&prefix(4)) && len == 16,
        Some(3) => match prefix(2) {
            34 | 37 => len == 15,
            35 => (3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len),
            30 => (300..=305).contains(&prefix(3)) && (14..=19).contains(&len),
            36 | 38 | 39 => (14..=19).contains(&len),
            _ => false,
        },
        Some(4) => matches!(len, 13 | 16 | 19),
        Some(5) => match prefix(2) {
            51..=55 => len == 16,
            50 | 56..=58 => (13..=19).contains(&len),
            _ => false,
        },
        Some(6) => (13..=19).contains(&len),
        _ => false,
    };
    network && luhn(&digits)
}

fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// One container on the way down a JSON body.
struct Frame {
    array: bool,
    /// In an object: the next string is a key.
    expect_key: bool,
    /// In an array: the index of the current entry.
    index: usize,
    /// This array is the conversation's messages.
    messages: bool,
}

/// Sets where each finding is (and whether it sits inside a JSON string) with one
/// structural walk of a JSON body; leaves a body that is not JSON alone.
fn locate(body: &[u8], findings: &mut [Finding]) {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    if !matches!(first.map(|i| body[i]), Some(b'{' | b'[')) {
        return;
    }
    let mut stack: Vec<Frame> = Vec::new();
    let (mut in_string, mut escaped, mut string_start) = (false, false, 0);
    // The top-level key whose value is being read.
    let mut top_key: Option<&'static str> = None;
    let mut next = 0;
    for (i, &b) in body.iter().enumerate() {
        while next < findings.len() && findings[next].range.start == i {
            let location = if stack.len() >= 2 && stack[1].messages {
                Location::Message(stack[1].index)
            } else if !stack.is_empty() && !stack[0].array {
                top_key.map_or(Location::Unknown, Location::Field)
            } else {
                Location::Unknown
            };
            findings[next].location = location;
            findings[next].in_string = in_string;
            next += 1;
        }
        if next >= findings.len() {
            break;
        }
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
                if stack.len() == 1 && !stack[0].array && stack[0].expect_key {
                    let key = &body[string_start + 1..i];
                    top_key = KNOWN_FIELDS.iter().find(|k| k.as_bytes() == key).copied();
                }
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                string_start = i;
            }
            b'{' | b'[' => {
                let messages = b == b'[' && stack.len() == 1 && top_key.is_some_and(|k| MESSAGE_ARRAYS.contains(&k));
                stack.push(Frame { array: b == b'[', expect_key: b == b'{', index: 0, messages });
            }
            b'}' | b']' => {
                stack.pop();
            }
            b',' => {
                if let Some(top) = stack.last_mut() {
                    if top.array {
                        top.index += 1;
                    } else {
                        top.expect_key = true;
                    }
                }
            }
            b':' => {
                if let Some(top) = stack.last_mut() {
                    top.expect_key = false;
                }
            }
            _ => {}
        }
    }
}

/// The body with each finding replaced by `[REDACTED:<kind>]` (quoted where it stood
/// outside a JSON string, so a JSON body stays JSON).
pub fn redact(body: &[u8], findings: &[Finding]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut last = 0;
    for f in findings {
        // A number outside a string is replaced whole, its sign included: `-"[…]"` is
        // not JSON.
        let start = if !f.in_string && f.range.start > last && body[f.range.start - 1] == b'-' {
            f.range.start - 1
        } else {
            f.range.start
        };
        out.extend_from_slice(&body[last..start]);
        let quote: &[u8] = if f.in_string { b"" } else { b"\"" };
        out.extend_from_slice(quote);
        out.extend_from_slice(b"[REDACTED:");
        out.extend_from_slice(f.kind.as_str().as_bytes());
        out.extend_from_slice(b"]");
        out.extend_from_slice(quote);
        last = f.range.end;
    }
    out.extend_from_slice(&body[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_negative_card_number_outside_a_string_is_redacted_into_valid_json() {
        let body = br#"{"metadata":{"n":-4111111111111111}}"#;
        let findings = all().scan(body);
        assert_eq!(findings.len(), 1, "{findings:?}");
        let out = redact(body, &findings);
        let parsed: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(parsed["metadata"]["n"], "[REDACTED:card_number]");
    }

    fn all() -> Scanner {
        let shapes = KeyShape::of_catalog(&Catalog::builtin().unwrap());
        Scanner::new(Kind::ALL.into_iter().collect(), &shapes).unwrap()
    }

    fn kinds_in(text: &str) -> Vec<Kind> {
        all().scan(text.as_bytes()).into_iter().map(|f| f.kind).collect()
    }

    /// The kinds found in `text`, each match exactly `value`.
    fn found(text: &str, value: &str) -> Vec<Kind> {
        let findings = all().scan(text.as_bytes());
        for f in &findings {
            assert_eq!(&text[f.range.clone()], value, "{f:?}");
        }
        findings.into_iter().map(|f| f.kind).collect()
    }

    const RSA: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF0PbnGcY5unA67hqLnqHnU\nk8o8FEaRmT6n4WcE=\n-----END RSA PRIVATE KEY-----";

    #[test]
    fn private_keys_in_every_variant_and_escaped_in_json() {
        for header in
            ["RSA PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "PRIVATE KEY"]
        {
            let pem = format!("-----BEGIN {header}-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END {header}-----");
            let text = format!("here is my key:\n{pem}\nthanks");
            let findings = all().scan(text.as_bytes());
            assert_eq!(findings.len(), 1, "{header}");
            assert_eq!(&text.as_bytes()[findings[0].range.clone()], pem.as_bytes(), "the whole block");
            let json = serde_json::json!({"messages": [{"role": "user", "content": text}]}).to_string();
            let findings = all().scan(json.as_bytes());
            assert_eq!(findings.iter().map(|f| f.kind).collect::<Vec<_>>(), [Kind::PrivateKey], "{json}");
            assert_eq!(findings[0].location, Location::Message(0));
            let redacted = String::from_utf8(redact(json.as_bytes(), &findings)).unwrap();
            assert!(!redacted.contains("b3BlbnNzaC1rZXktdjEAAAAA"), "{redacted}");
            let back: serde_json::Value = serde_json::from_str(&redacted).unwrap();
            assert_eq!(back["messages"][0]["content"], "here is my key:\n[REDACTED:private_key]\nthanks");
        }
        // Encrypted PEM with its headers; a block cut short before its footer.
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\nxyzBASE64==\n-----END RSA PRIVATE KEY-----";
        assert_eq!(kinds_in(legacy), [Kind::PrivateKey]);
        let cut =
            serde_json::json!({"prompt": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXkt\\\"tail"}).to_string();
        let findings = all().scan(cut.as_bytes());
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].location, Location::Field("prompt"));
        let redacted = redact(cut.as_bytes(), &findings);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&redacted).is_ok(),
            "{}",
            String::from_utf8_lossy(&redacted)
        );
        assert_eq!(kinds_in(RSA), [Kind::PrivateKey]);
        assert!(kinds_in("-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----").is_empty());
        assert!(kinds_in("-----BEGIN CERTIFICATE-----\nMIIBIjANBgkq\n-----END CERTIFICATE-----").is_empty());
    }

    #[test]
    fn aws_access_keys_word_bounded() {
        assert_eq!(found("my key is AKIAIOSFODNN7EXAMPLE ok", "AKIAIOSFODNN7EXAMPLE"), [Kind::AwsAccessKey]);
        assert_eq!(found("ASIAY34FZKBOKMUTVV7A", "ASIAY34FZKBOKMUTVV7A"), [Kind::AwsAccessKey]);
        let json = serde_json::json!({"messages": [{"role":"system","content":"x"}, {"role": "user", "content": "keys:\nAKIAIOSFODNN7EXAMPLE"}]}).to_string();
        let findings = all().scan(json.as_bytes());
        assert_eq!(
            (findings.len(), findings[0].location),
            (1, Location::Message(1)),
            "after a JSON-escaped line break"
        );
        assert!(kinds_in("XAKIAIOSFODNN7EXAMPLE").is_empty(), "glued to a word before");
        assert!(kinds_in("AKIAIOSFODNN7EXAMPLE1").is_empty(), "longer than an access key id");
        assert!(kinds_in("AKIAios0ODNN7EXAMPLE").is_empty(), "lower case");
        assert!(kinds_in("AKIA123").is_empty());
    }

    #[test]
    fn card_numbers_of_every_layout() {
        for card in [
            "4111111111111111",
            "4111 1111 1111 1111",
            "4111-1111-1111-1111",
            "5500 0000 0000 0004",
            "2223003122003222",
            "378282246310005",
            "3782 822463 10005",
            "6011111111111117",
            "3530111333300000",
            "30569309025904",
            "4222222222222",
            "6011 0009 9013 9420 7",
        ] {
            let text = format!("pay with {card}, thanks");
            assert_eq!(found(&text, card), [Kind::CardNumber], "{card}");
        }
        // Followed by an expiry or a code in the same run of groups.
        assert_eq!(kinds_in("card 4111 1111 1111 1111 123"), [Kind::CardNumber]);
        assert_eq!(kinds_in("ref 12 4111 1111 1111 1111"), [Kind::CardNumber]);
        // As a JSON number: redacted into a string, so the body stays JSON.
        let json = br#"{"messages":[{"role":"user","content":"hi"}],"metadata":{"card":4111111111111111}}"#;
        let findings = all().scan(json);
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].location, Location::Field("metadata"));
        let redacted: serde_json::Value = serde_json::from_slice(&redact(json, &findings)).unwrap();
        assert_eq!(redacted["metadata"]["card"], "[REDACTED:card_number]");
    }

    #[test]
    fn no_card_numbers_in_ordinary_numbers() {
        for text in [
            "order 1234567890123456 shipped", // 16 digits, not Luhn
            "order #4111111111111112",        // a card's shape, not Luhn
            "order id 100000000000000000001", // too long
            "call +1 415 555 0132 or +44 20 7946 0958",
            "call +4915112345678 now", // a phone number in E.164
            "tel 004915112345678",
            "(555) 123-4567, 555-123-4567",
            "on 2024-01-15 and 2024-01-16 2024-01-17",
            "at 2024-01-15T10:20:30Z",
            "ts 20240115123045123",
            "id 550e8400-e29b-41d4-a716-446655440000",
            "id 12345678-1234-5678-1234-567812345678",
            "pi is 3.1415926535897932384",
            "amount 0.4111111111111111",
            "x4111111111111111",
            "4111111111111111x",
            "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            "version 1.2.3-4111-1111",
        ] {
            assert!(kinds_in(text).is_empty(), "{text}: {:?}", kinds_in(text));
        }
    }

    #[test]
    fn provider_keys_only_when_asked_and_in_the_catalogs_shapes() {
        let key = "sk-ant-api03-abcDEF123456789xyzABC";
        assert_eq!(found(&format!("use {key} please"), key), [Kind::ProviderKey]);
        assert_eq!(kinds_in("gemini AIzaSyD-1234567890abcdefghijklmnopq"), [Kind::ProviderKey]);
        assert_eq!(kinds_in("sk-proj-Abc123456789012345678."), [Kind::ProviderKey]);
        assert!(kinds_in("the risk-assessment-document-for-q3").is_empty(), "glued to a word");
        assert!(kinds_in("see sk-learn-documentation-pages").is_empty(), "no digit");
        assert!(kinds_in("sk-abc1").is_empty(), "too short");
        let default =
            Scanner::new(PromptGuard::default().kinds(), &[KeyShape { prefix: "sk-".into(), min_len: 20 }]).unwrap();
        assert!(default.scan(key.as_bytes()).is_empty(), "off by default");
    }

    #[test]
    fn message_indexes_for_each_dialect() {
        let aws = "AKIAIOSFODNN7EXAMPLE";
        let openai = serde_json::json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": aws}]},
        ]});
        let anthropic = serde_json::json!({"system": format!("k {aws}"), "messages": []});
        let gemini = serde_json::json!({"contents": [{"parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
            {"parts": [{"functionResponse": {"name": "f", "response": {"out": aws}}}]}]});
        let tool = serde_json::json!({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": null,
            "tool_calls": [{"id": "1"}]}, {"role": "tool", "tool_call_id": "1", "content": aws}]});
        let caller_key = serde_json::json!({aws: 1});
        for (body, at) in [
            (openai, Location::Message(1)),
            (anthropic, Location::Field("system")),
            (gemini, Location::Message(2)),
            (tool, Location::Message(2)),
            (caller_key, Location::Unknown),
        ] {
            let findings = all().scan(body.to_string().as_bytes());
            assert_eq!(findings.iter().map(|f| f.location).collect::<Vec<_>>(), [at], "{body}");
        }
        let plain = all().scan(format!("plain text {aws}").as_bytes());
        assert_eq!(plain[0].location, Location::Unknown);
        assert_eq!(plain[0].location.to_string(), "message index unknown");
    }

    #[test]
    fn settings_default_to_blocking_three_kinds() {
        let guard = PromptGuard::default();
        assert_eq!(
            (guard.mode, guard.kinds()),
            (Mode::Block, [Kind::PrivateKey, Kind::AwsAccessKey, Kind::CardNumber].into_iter().collect())
        );
        let parsed: PromptGuard = serde_json::from_str(r#"{"mode": "redact", "kinds": ["card_number"]}"#).unwrap();
        assert_eq!(parsed.mode, Mode::Redact);
        assert!(serde_json::from_str::<PromptGuard>(r#"{"mode": "maybe"}"#).is_err());
        assert_eq!(PromptGuard { mode: Mode::Block, kinds: vec![] }.problems("prompt_guard").len(), 1);
        assert!(Scanner::new(Kinds::default(), &[]).unwrap().scan(b"AKIAIOSFODNN7EXAMPLE").is_empty());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        const SECRETS: [&str; 5] = [
            "AKIAIOSFODNN7EXAMPLE",
            "4111 1111 1111 1111",
            "5500000000000004",
            "sk-ant-api03-abcDEF123456789xyzABC",
            RSA,
        ];

        proptest! {
            #[test]
            fn redaction_never_leaves_the_value_and_keeps_json_valid(
                before in "[ -~\n\t\u{e9}]{0,40}",
                after in "[ -~\n\t\u{e9}]{0,40}",
                which in 0..SECRETS.len(),
                index in 0usize..4,
            ) {
                let secret = SECRETS[which];
                let mut messages: Vec<serde_json::Value> =
                    (0..index).map(|i| serde_json::json!({"role": "user", "content": format!("m{i}")})).collect();
                messages.push(serde_json::json!({"role": "user", "content": format!("{before} {secret} {after}")}));
                let body = serde_json::json!({"model": "m", "messages": messages}).to_string();
                let scanner = all();
                let findings = scanner.scan(body.as_bytes());
                prop_assert!(findings.iter().any(|f| f.location == Location::Message(index)), "{body}");
                let redacted = redact(body.as_bytes(), &findings);
                let text = String::from_utf8(redacted.clone()).unwrap_or_default();
                let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&redacted);
                prop_assert!(parsed.is_ok(), "{text}");
                let parsed = parsed.unwrap_or_default();
                let content = parsed["messages"][index]["content"].as_str().unwrap_or_default().to_owned();
                let core = secret.lines().nth(1).unwrap_or(secret);
                prop_assert!(!content.contains(core), "{content}");
                prop_assert!(!text.contains(core), "{text}");
                prop_assert!(scanner.scan(&redacted).is_empty(), "{text}");
            }

            #[test]
            fn redaction_of_any_body_stays_valid_json(content in "[ -~\n]{0,200}") {
                let body = serde_json::json!({"messages": [{"role": "user", "content": content}]}).to_string();
                let findings = all().scan(body.as_bytes());
                let redacted = redact(body.as_bytes(), &findings);
                prop_assert!(serde_json::from_slice::<serde_json::Value>(&redacted).is_ok());
            }
        }
    }
}
