//! PostgreSQL's text of dates, times, timestamps and intervals (`DateStyle` ISO, as the relay's
//! sessions set it) read as the numbers Debezium writes: days, microseconds, UTC text.

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Debezium's average month: 365.25 / 12 days.
const DAYS_PER_MONTH_AVG: f64 = 365.25 / 12.0;

/// `2024-01-31` (or `0044-03-15 BC`) as days since 1970-01-01.
pub(super) fn epoch_days(text: &str) -> Option<i64> {
    let date = parse_date(text)?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    Some((date - epoch).num_days())
}

/// Debezium's days for `infinity` and `-infinity` dates: the epoch days of the `LocalDate`s it
/// maps them to (`PostgresValueConverter.POSITIVE_INFINITY_LOCAL_DATE`, `-5877611-06-21`, and
/// `NEGATIVE_INFINITY_LOCAL_DATE`, `-5877611-06-22`: both far in the past, as Debezium has them).
pub(super) fn infinity_days(text: &str) -> Option<i64> {
    match text {
        "infinity" => Some(-2_147_472_692),
        "-infinity" => Some(-2_147_472_691),
        _ => None,
    }
}

/// Debezium's microseconds for `infinity` and `-infinity` timestamps: pgjdbc's
/// `DATE_POSITIVE_INFINITY` and `DATE_NEGATIVE_INFINITY` (milliseconds) read as microseconds
/// (`PostgresValueConverter.POSITIVE_INFINITY_INSTANT`); a millisecond column divides by 1000.
pub(super) fn infinity_micros(text: &str) -> Option<i64> {
    match text {
        "infinity" => Some(9_223_372_036_825_200_000),
        "-infinity" => Some(-9_223_372_036_832_400_000),
        _ => None,
    }
}

fn parse_date(text: &str) -> Option<chrono::NaiveDate> {
    use chrono::Datelike;
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let date = match iso_date(body) {
        Some(date) => date,
        None => chrono::NaiveDate::parse_from_str(body, "%Y-%m-%d").ok()?,
    };
    if bc {
        date.with_year(1 - date.year())
    } else {
        Some(date)
    }
}

/// `YYYY-MM-DD` with a four-digit year, the form Postgres writes almost every date in, read
/// without chrono's format parser (which took a fifth of a timestamp's conversion); `None` for
/// any other form, which the parser reads.
fn iso_date(text: &str) -> Option<chrono::NaiveDate> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0_u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let year = i32::try_from(number(&bytes[..4])?).ok()?;
    chrono::NaiveDate::from_ymd_opt(year, number(&bytes[5..7])?, number(&bytes[8..])?)
}

/// `12:34:56.789` as microseconds since midnight (`24:00:00` is a whole day).
pub(super) fn time_micros(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, ':');
    let hours: i64 = parts.next()?.parse().ok()?;
    let minutes: i64 = parts.next()?.parse().ok()?;
    let seconds = parts.next()?;
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, ""));
    let whole: i64 = whole.parse().ok()?;
    if fraction.len() > 6 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The fraction's digits padded to six with zeros (`789` is 789000 µs).
    let micros = fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(6)
        .fold(0, |n, d| n * 10 + i64::from(d - b'0'));
    let total = ((hours * 60 + minutes) * 60 + whole) * 1_000_000 + micros;
    (0..=MICROS_PER_DAY).contains(&total).then_some(total)
}

/// `2024-01-31 12:34:56.789` (UTC) as microseconds since the epoch.
pub(crate) fn timestamp_micros(text: &str) -> Option<i64> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (date, time) = body.split_once(' ')?;
    let date = if bc {
        parse_date(&format!("{date} BC"))?
    } else {
        parse_date(date)?
    };
    let days = (date - chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?).num_days();
    Some(days * MICROS_PER_DAY + time_micros(time)?)
}

/// Splits a trailing `+hh`, `+hh:mm` or `+hh:mm:ss` offset; returns the rest and the offset in
/// seconds.
fn split_offset(text: &str) -> Option<(&str, i64)> {
    let at = text.rfind(['+', '-'])?;
    let (body, offset) = text.split_at(at);
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let mut seconds = 0;
    for (i, part) in offset[1..].split(':').enumerate() {
        let value: i64 = part.parse().ok()?;
        seconds += value * [3600, 60, 1].get(i)?;
    }
    Some((body, sign * seconds))
}

/// A timestamptz (`2024-01-31 12:34:56.789+00`, `+05:30` and `BC` as PostgreSQL writes them) as
/// microseconds since the epoch.
pub(crate) fn timestamptz_micros(text: &str) -> Option<i64> {
    let (body, bc) = match text.strip_suffix(" BC") {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (local, offset) = split_offset(body)?;
    let local = if bc {
        timestamp_micros(&format!("{local} BC"))?
    } else {
        timestamp_micros(local)?
    };
    Some(local - offset * 1_000_000)
}

/// A timestamptz (sent in UTC by the session's TimeZone) as ISO-8601 with `Z`.
pub(super) fn timestamptz_utc(text: &str) -> Option<String> {
    let time = chrono::DateTime::from_timestamp_micros(timestamptz_micros(text)?)?;
    // Debezium's ZonedTimestamp always has six fraction digits (`...T12:34:56.000000Z`).
    Some(time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// A timetz as ISO-8601 time in UTC with `Z`.
pub(super) fn timetz_utc(text: &str) -> Option<String> {
    let (local, offset) = split_offset(text)?;
    let micros = (time_micros(local)? - offset * 1_000_000).rem_euclid(MICROS_PER_DAY);
    let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
    let base = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    Some(if fraction == 0 {
        format!("{base}Z")
    } else {
        let digits = format!("{fraction:06}");
        format!("{base}.{}Z", digits.trim_end_matches('0'))
    })
}

/// An ISO-8601 interval (`P1Y2M3DT4H5M6.5S`, components may be negative) as Debezium's
/// MicroDuration.
pub(super) fn interval_micros(text: &str) -> Option<i64> {
    let body = text.strip_prefix('P')?;
    let (date_part, time_part) = body.split_once('T').unwrap_or((body, ""));
    let mut total = 0.0_f64;
    for (part, units) in [
        (date_part, &[('Y', 0), ('M', 1), ('W', 2), ('D', 3)][..]),
        (time_part, &[('H', 4), ('M', 5), ('S', 6)][..]),
    ] {
        let mut rest = part;
        while !rest.is_empty() {
            let end = rest.find(|c: char| c.is_ascii_alphabetic())?;
            let number: f64 = rest[..end].parse().ok()?;
            let unit = rest[end..].chars().next()?;
            let kind = units.iter().find(|(u, _)| *u == unit)?.1;
            let micros_per_unit = match kind {
                0 => 12.0 * DAYS_PER_MONTH_AVG * 86_400e6,
                1 => DAYS_PER_MONTH_AVG * 86_400e6,
                2 => 7.0 * 86_400e6,
                3 => 86_400e6,
                4 => 3_600e6,
                5 => 60e6,
                _ => 1e6,
            };
            total += number * micros_per_unit;
            rest = &rest[end + 1..];
        }
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(total.round() as i64)
}
