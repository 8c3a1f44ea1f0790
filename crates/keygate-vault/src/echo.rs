//! Scrubbing a provider's echo of the key keygate sent it. A provider may repeat the key
//! in an answer — an error message, a header, a "who am I" body, a stream — in any
//! encoding: raw, percent-encoded (either case, or every byte), base64 or base64url (at
//! any alignment inside a longer encoded string), hex, or JSON `\u` escapes, and
//! sometimes cut short. [`EchoScrubber`] knows every such form of the secrets of one
//! call and replaces every occurrence (overlapping ones merged); [`StreamScrub`] does so
//! across chunk boundaries, holding back a window of the longest form's length.
//!
//! It is built for every proxied call, so building it must cost next to nothing: forms
//! are found by a SIMD scan for their first byte and a comparison, with no set-up per
//! form (an Aho-Corasick automaton over all forms took about a millisecond per call to
//! build and cut throughput tenfold; a substring finder per form, about 13 µs).
//!
//! The scrubber holds forms of the plaintext for one call only: it is built when the
//! call is sent and dropped when the answer has been relayed, never cached.

use crate::redact::REDACTED;
use std::sync::{Arc, OnceLock};
use zeroize::Zeroize;

/// Forms shorter than this are not searched for: too likely to match ordinary text.
const MIN_FORM: usize = 8;
const B64_STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Every form of a call's secrets a provider might echo, and how to find them.
///
/// Building every form costs more than most answers take to scan (about 35,000
/// instructions a call, an eighth of a proxied call's): so the scrubber starts with the
/// first four bytes of each form only (computed from the secrets' first six bytes), and
/// builds the forms the first time an answer holds one of those prefixes, which an answer
/// without an echo almost never does.
pub struct EchoScrubber {
    /// The secrets, long enough to search for (zeroized on drop).
    secrets: Vec<Vec<u8>>,
    /// The first four bytes of every form (as one little-endian number each; a few
    /// repeat, which costs a comparison, where sorting them cost more).
    prefixes: Vec<u32>,
    /// Which two bytes begin a prefix, what the first pass looks for: bit `b % 64` of
    /// `pairs[a]` is set when some prefix begins with `a`, then `b` (boxed: the
    /// scrubber moves with the call; zeroized on drop, like the prefixes).
    pairs: Box<[u64; 256]>,
    /// Every form, built on the first candidate.
    forms: OnceLock<Vec<Form>>,
    /// The longest form, in bytes: how much a stream must hold back.
    longest: usize,
}

/// How many leading bytes of each form the cheap first pass compares.
const PREFIX: usize = 4;
const _: () = assert!(PREFIX == 4, "prefixes are compared as one u32");
/// How many prefixes [`heads_of`] gives one secret: one per encoding.
const HEADS_PER_SECRET: usize = 16;

impl std::fmt::Debug for EchoScrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EchoScrubber(..)")
    }
}

impl EchoScrubber {
    /// A scrubber for `secrets` (the injected key; for OAuth2, also the access token).
    /// `None` when no secret is long enough to be told apart from ordinary text.
    pub fn new(secrets: &[&str]) -> Option<Self> {
        let secrets: Vec<Vec<u8>> =
            secrets.iter().filter(|s| s.len() >= MIN_FORM).map(|s| s.as_bytes().to_vec()).collect();
        if secrets.is_empty() {
            return None;
        }
        // Sized up front: a vector that grew would leave its first copy unzeroized.
        let mut prefixes: Vec<u32> = Vec::with_capacity(HEADS_PER_SECRET * secrets.len());
        for secret in &secrets {
            heads_of(secret, &mut prefixes);
        }
        let mut pairs = Box::new([0u64; 256]);
        for prefix in &prefixes {
            let [first, second, ..] = prefix.to_le_bytes();
            pairs[usize::from(first)] |= pair_bit(second);
        }
        // The longest form is the JSON `\u00XX` escape of the longest secret.
        let longest = secrets.iter().map(|s| s.len() * 6).max().unwrap_or(0);
        Some(Self { secrets, prefixes, pairs, forms: OnceLock::new(), longest })
    }

    /// Whether `bytes` may hold a form: one of the forms' first four bytes are there.
    /// One pass, byte by byte against the table of first two bytes, each hit compared
    /// with the prefixes (a SIMD search per prefix, or per three first bytes, restarts at
    /// every hit, and the forms' first bytes are common letters; the pairs, even with four
    /// second bytes sharing each bit, let far fewer bytes through).
    fn candidate(&self, bytes: &[u8]) -> bool {
        bytes.windows(PREFIX).any(|head| {
            let head: [u8; PREFIX] = [head[0], head[1], head[2], head[3]];
            self.pairs[usize::from(head[0])] & pair_bit(head[1]) != 0
                && self.prefixes.contains(&u32::from_le_bytes(head))
        })
    }

    /// Every form of the secrets (built once, on the first candidate).
    fn forms(&self) -> &[Form] {
        self.forms.get_or_init(|| {
            let mut forms: Vec<Form> = Vec::new();
            for secret in &self.secrets {
                forms_of(secret, &mut forms);
            }
            // Short forms and duplicates are dropped zeroized, like the forms kept.
            forms.sort_by(|a, b| a.bytes.cmp(&b.bytes));
            let mut kept: Vec<Form> = Vec::with_capacity(forms.len());
            for mut form in forms {
                if form.bytes.len() < MIN_FORM || kept.last().is_some_and(|k| k.bytes == form.bytes) {
                    form.bytes.zeroize();
                } else {
                    kept.push(form);
                }
            }
            kept
        })
    }

    /// Whether `bytes` holds any form of the secrets.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.candidate(bytes) && self.forms().iter().any(|f| occurrences(bytes, f.needle()).next().is_some())
    }

    /// Where forms of the secrets lie in `bytes`: ranges sorted by start, overlapping or
    /// touching ones merged.
    fn spans(&self, bytes: &[u8]) -> Vec<(usize, usize)> {
        if !self.candidate(bytes) {
            return Vec::new();
        }
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for form in self.forms() {
            // A match runs as far as the echo follows the whole form: an echo cut short
            // anywhere after the form's first third is replaced to its last byte.
            spans.extend(occurrences(bytes, form.needle()).map(|at| (at, at + form.matched(&bytes[at..]))));
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// `bytes` with every form of the secrets replaced by [`REDACTED`].
    pub fn scrub(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        for (start, end) in self.spans(bytes) {
            out.extend_from_slice(&bytes[at..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = end;
        }
        out.extend_from_slice(&bytes[at..]);
        out
    }

    /// A scrubber for one stream of chunks.
    pub fn stream(self: &Arc<Self>) -> StreamScrub {
        StreamScrub { scrubber: Arc::clone(self), carry: Vec::new() }
    }
}

/// Scrubs a stream chunk by chunk: a form split across two chunks is still found,
/// because the last `longest - 1` bytes of what has been seen are held back until the
/// next chunk (or the end) shows how they continue.
#[derive(Debug)]
pub struct StreamScrub {
    scrubber: Arc<EchoScrubber>,
    carry: Vec<u8>,
}

impl StreamScrub {
    /// What can be passed on after `chunk`, scrubbed; the rest is held back.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.carry.extend_from_slice(chunk);
        let hold = self.scrubber.longest.saturating_sub(1);
        if self.carry.len() <= hold {
            return Vec::new();
        }
        // Release everything except the last `hold` bytes, but never cut a match in two:
        // a match that starts in the released part is released whole.
        let mut cut = self.carry.len() - hold;
        let mut out = Vec::with_capacity(cut);
        let mut at = 0;
        for (start, end) in self.scrubber.spans(&self.carry) {
            if start >= cut {
                break;
            }
            out.extend_from_slice(&self.carry[at..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            at = end;
            cut = cut.max(end);
        }
        out.extend_from_slice(&self.carry[at..cut]);
        self.carry.drain(..cut);
        out
    }

    /// The end of the stream: what was held back, scrubbed.
    pub fn finish(&mut self) -> Vec<u8> {
        let rest = self.scrubber.scrub(&self.carry);
        self.carry.zeroize();
        self.carry.clear();
        rest
    }

    /// Drops what was held back (a stream cut short at a size limit: a partial form at
    /// the cut must not leave).
    pub fn discard(&mut self) {
        self.carry.zeroize();
        self.carry.clear();
    }
}

impl Drop for EchoScrubber {
    fn drop(&mut self) {
        for secret in &mut self.secrets {
            secret.zeroize();
        }
        for prefix in &mut self.prefixes {
            prefix.zeroize();
        }
        (*self.pairs).zeroize();
        if let Some(forms) = self.forms.get_mut() {
            for form in forms {
                form.bytes.zeroize();
            }
        }
    }
}

/// The bit of `pairs[a]` that stands for a prefix's second byte `b`.
fn pair_bit(b: u8) -> u64 {
    1 << (b % 64)
}

/// Where `needle` starts in `haystack`: candidates from a SIMD scan for its first byte,
/// confirmed by comparison. No set-up per needle, which matters more here than search
/// speed: a scrubber is built for every call and answers are mostly short.
fn occurrences<'a>(haystack: &'a [u8], needle: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
    let first = needle.first().copied().unwrap_or(0);
    memchr::memchr_iter(first, haystack).filter(move |&at| haystack[at..].starts_with(needle))
}

impl Drop for StreamScrub {
    fn drop(&mut self) {
        self.carry.zeroize();
    }
}

/// One encoding of a secret, and how much of it is enough to count as an echo.
struct Form {
    /// The whole encoded secret.
    bytes: Vec<u8>,
    /// The length of the encoding of the secret's first third (at least 16 bytes of it):
    /// an echo cut short still reveals most of the key, so this much of the form is a
    /// match, which then runs as far as the echo follows the form.
    cut: usize,
}

impl Form {
    fn needle(&self) -> &[u8] {
        &self.bytes[..self.cut]
    }

    /// How many bytes at the start of `text` follow this form (at least the needle's,
    /// when `text` starts with it).
    fn matched(&self, text: &[u8]) -> usize {
        self.bytes.iter().zip(text).take_while(|(a, b)| a == b).count()
    }
}

/// How much of a secret an echo must hold to be one: the whole of a short secret, else
/// its first third (at least 16 bytes).
fn cut_short(secret: &[u8]) -> usize {
    if secret.len() >= 24 {
        (secret.len() / 3).max(16)
    } else {
        secret.len()
    }
}

/// Every form of `secret` worth searching for, each with its cut-short length.
fn forms_of(secret: &[u8], forms: &mut Vec<Form>) {
    let short = &secret[..cut_short(secret)];
    let mut encoded = Vec::new();
    encodings(secret, &mut encoded);
    let mut heads = Vec::new();
    encodings(short, &mut heads);
    // Every encoding maps a prefix of the secret to a prefix of the form, in the same
    // order: the short secret's encoding is the needle (checked, else the whole form).
    for (bytes, head) in encoded.into_iter().zip(heads.iter_mut()) {
        let cut = if bytes.starts_with(head) && head.len() >= MIN_FORM { head.len() } else { bytes.len() };
        head.zeroize();
        forms.push(Form { bytes, cut });
    }
    for mut head in heads {
        head.zeroize();
    }
}

/// Every encoding of `secret` a provider may echo, always in the same order.
fn encodings(secret: &[u8], forms: &mut Vec<Vec<u8>>) {
    forms.push(secret.to_vec());
    // JSON may escape `/` as `\/` (pushed for every secret, so the order holds).
    forms.push(secret.iter().flat_map(|&b| if b == b'/' { vec![b'\\', b'/'] } else { vec![b] }).collect());
    for upper in [true, false] {
        forms.push(percent(secret, upper, false));
        forms.push(percent(secret, upper, true));
        forms.push(hex(secret, upper));
        forms.push(json_escaped(secret, upper));
    }
    for alphabet in [B64_STD, B64_URL] {
        for offset in 0..3 {
            // Always one entry per alignment (empty when too short), so the order holds.
            forms.push(base64_middle(secret, offset, alphabet).unwrap_or_default());
        }
    }
}

/// The first [`PREFIX`] bytes of every form [`forms_of`] makes of `secret`, computed on
/// the stack from its first bytes (every encoding maps a prefix of the secret to a prefix
/// of the form). A test checks they match the forms.
fn heads_of(secret: &[u8], heads: &mut Vec<u32>) {
    /// A form's first bytes, the rest ignored.
    #[derive(Default)]
    struct Head {
        bytes: [u8; PREFIX],
        len: usize,
    }
    impl Head {
        fn push(&mut self, bytes: &[u8]) {
            for &b in bytes {
                if self.len < PREFIX {
                    self.bytes[self.len] = b;
                    self.len += 1;
                }
            }
        }
        fn full(&self) -> bool {
            self.len == PREFIX
        }
    }
    let mut keep = |head: Head| {
        if head.full() {
            heads.push(u32::from_le_bytes(head.bytes));
        }
    };
    // Raw, cut short (the same start), and with `/` escaped as `\/`.
    let mut raw = Head::default();
    raw.push(secret);
    keep(raw);
    let mut slashed = Head::default();
    for &b in secret.iter().take(PREFIX) {
        slashed.push(if b == b'/' { b"\\/" } else { std::slice::from_ref(&b) });
    }
    keep(slashed);
    for upper in [true, false] {
        for every in [false, true] {
            let mut head = Head::default();
            for &b in secret.iter().take(PREFIX) {
                if !every && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')) {
                    head.push(std::slice::from_ref(&b));
                } else {
                    head.push(b"%");
                    head.push(&hex_byte(b, upper));
                }
            }
            keep(head);
        }
        let mut hexed = Head::default();
        for &b in secret.iter().take(PREFIX) {
            hexed.push(&hex_byte(b, upper));
        }
        keep(hexed);
        let mut escaped = Head::default();
        escaped.push(b"\\u00");
        keep(escaped);
    }
    // Base64 at each alignment: the first two groups of the padded secret give at least
    // four characters past the skipped ones.
    for alphabet in [B64_STD, B64_URL] {
        for offset in 0..3 {
            let mut padded = [0u8; 6];
            let take = (6 - offset).min(secret.len());
            padded[offset..offset + take].copy_from_slice(&secret[..take]);
            let mut chars = [0u8; 8];
            for (g, group) in padded.chunks(3).enumerate() {
                let n = (u32::from(group[0]) << 16) | (u32::from(group[1]) << 8) | u32::from(group[2]);
                for i in 0..4 {
                    chars[g * 4 + i] = alphabet[((n >> (18 - 6 * i)) & 63) as usize];
                }
            }
            let skip = [0, 2, 3][offset];
            let mut head = Head::default();
            head.push(&chars[skip..]);
            keep(head);
            padded.zeroize();
            chars.zeroize();
        }
    }
}

/// Percent-encoding: the unreserved characters as they are (or, with `every`, each byte).
fn percent(secret: &[u8], upper: bool, every: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len() * 3);
    for &b in secret {
        if !every && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')) {
            out.push(b);
        } else {
            out.push(b'%');
            out.extend_from_slice(&hex_byte(b, upper));
        }
    }
    out
}

fn hex(secret: &[u8], upper: bool) -> Vec<u8> {
    secret.iter().flat_map(|&b| hex_byte(b, upper)).collect()
}

/// Every character as a JSON `\u00XX` escape.
fn json_escaped(secret: &[u8], upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(secret.len() * 6);
    for &b in secret {
        out.extend_from_slice(b"\\u00");
        out.extend_from_slice(&hex_byte(b, upper));
    }
    out
}

fn hex_byte(b: u8, upper: bool) -> [u8; 2] {
    let digits: &[u8; 16] = if upper { b"0123456789ABCDEF" } else { b"0123456789abcdef" };
    [digits[usize::from(b >> 4)], digits[usize::from(b & 0xf)]]
}

/// The base64 characters that depend only on `secret`'s bytes when it starts `offset`
/// bytes into a 3-byte group of a longer encoded string (whatever surrounds it).
fn base64_middle(secret: &[u8], offset: usize, alphabet: &[u8; 64]) -> Option<Vec<u8>> {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(secret);
    let encoded = base64_encode(&padded, alphabet);
    // Characters before the secret's first full influence: offset 1 skips 2, offset 2
    // skips 3. At the end, drop the characters of a group the secret does not fill.
    let skip = [0, 2, 3][offset];
    let full_groups = padded.len() / 3;
    let end = full_groups * 4;
    (end > skip).then(|| encoded[skip..end].to_vec())
}

fn base64_encode(bytes: &[u8], alphabet: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [group[0], *group.get(1).unwrap_or(&0), *group.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=group.len() {
            out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
        }
        out.extend(std::iter::repeat_n(b'=', 3 - group.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-proj-CANARYabcdefghijklmnop0123456789/+=xyz";

    fn b64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
        String::from_utf8(base64_encode(bytes, alphabet)).unwrap()
    }

    fn every_echo() -> Vec<(String, String)> {
        let key = KEY.as_bytes();
        let mut echoes = vec![
            ("raw".to_owned(), format!("Incorrect API key provided: {KEY}.")),
            ("percent upper".to_owned(), format!("?k={}", String::from_utf8(percent(key, true, false)).unwrap())),
            ("percent lower".to_owned(), format!("?k={}", String::from_utf8(percent(key, false, false)).unwrap())),
            ("percent every byte".to_owned(), String::from_utf8(percent(key, true, true)).unwrap()),
            ("hex".to_owned(), format!("id={}", String::from_utf8(hex(key, false)).unwrap())),
            ("HEX".to_owned(), String::from_utf8(hex(key, true)).unwrap()),
            (
                "json escapes".to_owned(),
                format!("{{\"k\":\"{}\"}}", String::from_utf8(json_escaped(key, false)).unwrap()),
            ),
            ("json slash".to_owned(), format!("{{\"k\":\"{}\"}}", KEY.replace('/', "\\/"))),
            ("cut short".to_owned(), format!("key {}... was revoked", &KEY[..KEY.len() - 4])),
            ("cut at a third".to_owned(), format!("key {}...", &KEY[..KEY.len() / 3 + 2])),
            ("hex cut short".to_owned(), String::from_utf8(hex(&key[..key.len() - 4], false)).unwrap()),
            ("json cut short".to_owned(), String::from_utf8(json_escaped(&key[..key.len() - 4], true)).unwrap()),
            ("percent cut short".to_owned(), String::from_utf8(percent(&key[..key.len() - 4], true, true)).unwrap()),
        ];
        // Base64 at every alignment inside a longer string (`Basic user:key`, a JWT claim).
        for prefix in ["", "u", "u:", "us:"] {
            let plain = format!("{prefix}{KEY}");
            echoes.push((format!("base64 {prefix:?}"), format!("Basic {}", b64(plain.as_bytes(), B64_STD))));
            echoes.push((format!("base64url {prefix:?}"), b64(plain.as_bytes(), B64_URL)));
        }
        echoes
    }

    #[test]
    fn every_encoding_of_the_key_is_found_and_replaced() {
        let scrubber = EchoScrubber::new(&[KEY]).unwrap();
        for (what, echo) in every_echo() {
            assert!(scrubber.found_in(echo.as_bytes()), "{what}: {echo}");
            let out = String::from_utf8(scrubber.scrub(echo.as_bytes())).unwrap();
            assert!(out.contains(REDACTED), "{what}: {out}");
            assert!(!out.contains("CANARYabcdefghijkl"), "{what}: {out}");
            // Nothing of any form is left either side of the redaction: no 10 bytes of it.
            for form in scrubber.forms() {
                for window in form.bytes.windows(10) {
                    assert!(!out.as_bytes().windows(10).any(|w| w == window), "{what}: {out} keeps part of a form");
                }
            }
        }
        let ordinary = b"{\"choices\":[{\"message\":{\"content\":\"sk-proj- is how OpenAI keys start\"}}]}";
        assert_eq!(scrubber.scrub(ordinary), ordinary.to_vec(), "nothing else is touched");
    }

    /// Each form of each secret is found wherever it lies in the text (zero to three
    /// bytes either side of it: the first pass looks at every byte, whatever its
    /// alignment), and so is the shortest echo that counts (its needle), alone; one byte
    /// less is not an echo. Scrubbers of one secret and of two.
    #[test]
    fn forms_are_found_at_either_end_of_the_text() {
        let secrets: [&[&str]; 5] = [
            &[KEY],
            &["sk-ant-api03-CANARY_x-y"],
            &["a/b/c/d/e/f/g/h"],
            &["12345678"],
            &[KEY, "ya29.a0AfB_byCANARYaccesstoken0123456789"],
        ];
        for secrets in secrets {
            let scrubber = EchoScrubber::new(secrets).unwrap();
            assert!(scrubber.prefixes.len() <= HEADS_PER_SECRET * secrets.len());
            for form in scrubber.forms() {
                let shown = String::from_utf8_lossy(&form.bytes).into_owned();
                for (before, after) in (0..=3).flat_map(|b| (0..=3).map(move |a| (b, a))) {
                    let text = [&b"xyz"[..before], &form.bytes, &b" .,"[..after]].concat();
                    assert!(scrubber.found_in(&text), "{shown} in {:?}", String::from_utf8_lossy(&text));
                }
                assert!(scrubber.found_in(form.needle()), "{shown}: its needle alone");
                let short = &form.needle()[..form.needle().len() - 1];
                assert!(!scrubber.found_in(short), "{shown}: less than its needle");
            }
        }
    }

    /// [`heads_of`] gives each secret at most [`HEADS_PER_SECRET`] prefixes (the
    /// scrubber's vector of them is sized by it and must never grow).
    #[test]
    fn a_secret_has_at_most_heads_per_secret_prefixes() {
        for secret in [KEY, "12345678", "a/b/c/d/e/f/g/h", r"\u00\u00\u00", "%%%%%%%%"] {
            let mut heads = Vec::new();
            heads_of(secret.as_bytes(), &mut heads);
            assert!(heads.len() <= HEADS_PER_SECRET, "{secret}: {}", heads.len());
        }
    }

    #[test]
    fn a_stream_is_scrubbed_across_every_chunk_boundary() {
        let scrubber = Arc::new(EchoScrubber::new(&[KEY]).unwrap());
        for (what, echo) in every_echo() {
            let text = format!("data: {{\"a\":1}}\n\ndata: {echo} tail\n\n");
            for size in [1, 2, 3, 7, 16, 64] {
                let mut stream = scrubber.stream();
                let mut out = Vec::new();
                for chunk in text.as_bytes().chunks(size) {
                    out.extend(stream.push(chunk));
                }
                out.extend(stream.finish());
                let out = String::from_utf8(out).unwrap();
                assert!(!out.contains("CANARYabcdefghijkl") && out.ends_with(" tail\n\n"), "{what} / {size}: {out}");
                assert_eq!(out, String::from_utf8(scrubber.scrub(text.as_bytes())).unwrap(), "{what} / {size}");
            }
        }
    }

    #[test]
    fn a_stream_cut_at_a_limit_leaves_no_partial_key() {
        let scrubber = Arc::new(EchoScrubber::new(&[KEY]).unwrap());
        let mut stream = scrubber.stream();
        let body = format!("{}{}", "x".repeat(100), KEY);
        let out = stream.push(&body.as_bytes()[..100 + 14]);
        stream.discard();
        assert!(!String::from_utf8(out).unwrap().contains("sk-proj-CANA"));
    }

    #[test]
    fn an_answer_without_an_echo_builds_no_forms_and_prefixes_cover_every_form() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut random_keys: Vec<String> = (0..200)
            .map(|i| {
                (0..8 + i % 40)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        char::from(b' ' + (seed % 95) as u8)
                    })
                    .collect()
            })
            .collect();
        random_keys.extend(
            [KEY, "sk-ant-api03-CANARY_x-y", "AIzaSyCANARY0123456789", "a/b/c/d/e/f/g/h", "/////////", "12345678"]
                .map(str::to_owned),
        );
        for key in random_keys.iter().map(String::as_str) {
            let scrubber = EchoScrubber::new(&[key]).unwrap();
            let ordinary =
                b"{\"id\":\"chatcmpl-1\",\"created\":1700000000,\"choices\":[{\"message\":{\"content\":\"Hi!\"}}]}";
            if !key.is_empty() && !random_keys[..200].iter().any(|r| r == key) {
                assert!(!scrubber.found_in(ordinary) && scrubber.scrub(ordinary) == ordinary.to_vec());
                assert!(scrubber.forms.get().is_none(), "{key}: forms were built for an answer without a candidate");
            }
            for form in scrubber.forms() {
                let head: [u8; PREFIX] = form.bytes[..PREFIX].try_into().unwrap();
                assert!(
                    scrubber.prefixes.contains(&u32::from_le_bytes(head))
                        && scrubber.pairs[usize::from(head[0])] & pair_bit(head[1]) != 0,
                    "{key}: no prefix for form {:?}",
                    String::from_utf8_lossy(&form.bytes)
                );
            }
        }
    }

    #[test]
    fn short_secrets_make_no_scrubber() {
        assert!(EchoScrubber::new(&["abc"]).is_none());
    }
}
