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

/// `at` as SQLite stores it ([`SQLITE_FORMAT`]), written digit by digit: every usage row
/// carries one, and chrono's general formatter cost more than the rest of the row's
/// encoding together.
fn sqlite_text(at: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    let (year, nanos) = (at.year(), at.nanosecond());
    if !(0..=9999).contains(&year) {
        return at.format(SQLITE_FORMAT).to_string();
    }
    // A leap second's nanoseconds run past 1e9; chrono prints it as second 60.
    let second = at.second() + nanos / 1_000_000_000;
    let micros = nanos % 1_000_000_000 / 1_000;
    let mut out = String::with_capacity(27);
    push_digits(&mut out, year.unsigned_abs(), 4);
    for (sep, value, width) in [
        ('-', at.month(), 2),
        ('-', at.day(), 2),
        ('T', at.hour(), 2),
        (':', at.minute(), 2),
        (':', second, 2),
        ('.', micros, 6),
    ] {
        out.push(sep);
        push_digits(&mut out, value, width);
    }
    out.push('Z');
    out
}

/// `value`'s last `width` decimal digits, zero-padded.
fn push_digits(out: &mut String, value: u32, width: u32) {
    for place in (0..width).rev() {
        out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
    }
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
            leap,
            Some(Utc::now()),
        ];
        for at in cases.into_iter().map(Option::unwrap) {
            assert_eq!(sqlite_text(&at), at.format(SQLITE_FORMAT).to_string(), "{at:?}");
        }
        assert_eq!(sqlite_text(&leap.unwrap()), "2016-12-31T23:59:60.500000Z");
    }
}
