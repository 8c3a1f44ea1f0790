//! The usage report's shapes: how [`crate::Store::usage_report`] and
//! [`crate::Store::usage_by_day`] group events and what each group adds up to.
//!
//! Not for: a credential's running totals, which are [`keygate_core::UsageTotals`].

/// What a usage report's rows are keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UsageGrouping {
    /// The event's UTC calendar day, `YYYY-MM-DD`.
    Day,
    Provider,
    /// The model, or `(unknown)` when the event names none.
    Model,
    /// The credential's id (hyphenated UUID), or `(none)` for calls made without one.
    Credential,
    /// Where the key came from (`key_source`).
    Source,
}

/// One row of a usage report: the events whose key is `key`, counted and summed exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub key: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Billionths of a US dollar.
    pub cost_nano_usd: i64,
}

/// One row of a report by day: the events of one UTC calendar day whose key is
/// `totals.key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyUsageTotals {
    pub day: chrono::NaiveDate,
    pub totals: UsageTotals,
}
