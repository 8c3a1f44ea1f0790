//! The CLI's output paths: results to standard output, errors and guidance to standard
//! error. Everything is scrubbed of secret shapes, except [`secret_line`], which exists
//! for the one-time display of a value the user asked for (a new key or token).

use keygate_vault::redact::scrub;
use std::io::Write;

/// A result line on standard output.
pub fn line(text: &str) {
    let _ = writeln!(std::io::stdout(), "{}", scrub(text));
}

/// A secret the user asked to see, once, as the last line of standard output.
pub fn secret_line(secret: &str) {
    let _ = writeln!(std::io::stdout(), "{secret}");
}

/// Guidance on standard error.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{}", scrub(text));
}

/// An error on standard error.
pub fn error(text: &str) {
    let _ = writeln!(std::io::stderr(), "error: {}", scrub(text));
}
