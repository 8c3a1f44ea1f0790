//! Timestamps as the two backends store them: native `TIMESTAMPTZ` in PostgreSQL,
//! fixed-width RFC 3339 UTC text in SQLite (so text order is time order and range
//! filters work). The shared SQL binds and reads [`Ts`] for both, and asks
//! [`utc_day_of_at`] for the one expression that differs.

use crate::Backend;
use chrono::{DateTime, Utc};
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteArgumentValue, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Postgres, Sqlite, Type};

const SQLITE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ts(pub DateTime<Utc>);

impl From<DateTime<Utc>> for Ts {
    fn from(value: DateTime<Utc>) -> Self {
        Self(value)
    }
}

impl Type<Sqlite> for Ts {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Ts {
    fn encode_by_ref(&self, buf: &mut Vec<SqliteArgumentValue<'q>>) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(sqlite_text(&self.0), buf)
    }
}

/// `at` as SQLite stores it ([`SQLITE_FORMAT`]), written digit by digit into a fixed
/// template: every usage row carries one, and chrono's general formatter cost more than
/// the rest of the row's encoding together.
fn sqlite_text(at: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // Once: each of `DateTime`'s own field getters converts to the naive time again.
    let at = at.naive_utc();
    let (year, nanos) = (at.year(), at.nanosecond());
    if !(0..=9999).contains(&year) {
        return at.and_utc().format(SQLITE_FORMAT).to_string();
    }
    // A leap second's nanoseconds run past 1e9; chrono prints it as second 60.
    let second = at.second() + nanos / 1_000_000_000;
    let micros = nanos % 1_000_000_000 / 1_000;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    // Each field's value and the end of its digits in the template.
    for (mut value, end, width) in [
        (year.unsigned_abs(), 4, 4),
        (at.month(), 7, 2),
        (at.day(), 10, 2),
        (at.hour(), 13, 2),
        (at.minute(), 16, 2),
        (second, 19, 2),
        (micros, 26, 6),
    ] {
        for digit in text[end - width..end].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // All ASCII, so nothing is replaced: the checked copy, without a panic path.
    String::from_utf8_lossy(&text).into_owned()
}

impl<'r> Decode<'r, Sqlite> for Ts {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<'r, Sqlite>>::decode(value)?;
        Ok(Ts(DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc)))
    }
}

impl Type<Postgres> for Ts {
    fn type_info() -> PgTypeInfo {
        <DateTime<Utc> as Type<Postgres>>::type_info()
    }
    fn compatible(ty: &PgTypeInfo) -> bool {
        <DateTime<Utc> as Type<Postgres>>::compatible(ty)
    }
}

impl Encode<'_, Postgres> for Ts {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <DateTime<Utc> as Encode<'_, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Ts {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <DateTime<Utc> as Decode<'r, Postgres>>::decode(value).map(Ts)
    }
}

pub(crate) fn opt(value: Option<DateTime<Utc>>) -> Option<Ts> {
    value.map(Ts)
}

/// SQL for the UTC calendar day (`YYYY-MM-DD`) of an `at` column. SQLite's text starts
/// with it (see `SQLITE_FORMAT`); PostgreSQL formats the instant in UTC, whatever the
/// session's time zone.
pub(crate) const fn utc_day_of_at(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "substr(at, 1, 10)",
        Backend::Postgres => "to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn sqlite_text_is_chronos_format_digit_for_digit() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .map(|t| Utc.from_utc_datetime(&t));
        let cases = [
            Utc.timestamp_opt(0, 0).single(),
            Utc.timestamp_opt(1_764_547_200, 123_456_789).single(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).single(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).single(),
            Utc.with_ymd_and_hms(999, 9, 9, 9, 9, 9).single(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).single(),
            Utc.timestamp_opt(1_764_547_200, 5_000).single(),
            Utc.timestamp_opt(1_764_547_200, 999_999_999).single(),
            leap,
            Some(Utc::now()),
        ];
        // And a second in every day of a leap year, at a different time of day and
        // microsecond each.
        let days = (0..366)
            .map(|day| Utc.timestamp_opt(1_704_067_200 + day * 86_400 + day * 137, (day as u32) * 2_731_001).single());
        for at in cases.into_iter().chain(days).map(Option::unwrap) {
            assert_eq!(sqlite_text(&at), at.format(SQLITE_FORMAT).to_string(), "{at:?}");
        }
        assert_eq!(sqlite_text(&leap.unwrap()), "2016-12-31T23:59:60.500000Z");
    }
}
