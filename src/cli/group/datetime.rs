//! `--to-datetime` values: ISO-8601 date-times as `kafka-consumer-groups.sh`
//! takes them, `YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM]`, turned into
//! milliseconds since the Unix epoch. Without a zone the time is UTC (Kafka's
//! tool uses the local zone there; a broker's clients may be anywhere).

/// Milliseconds since 1970-01-01T00:00:00Z for an ISO-8601 date-time.
pub fn parse_iso_ms(s: &str) -> Result<i64, String> {
    let bad = || format!("expected YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM], got {s:?}");
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let (time, zone_offset_min) = split_zone(rest).ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    let [h, mi, se] = t.as_slice() else {
        return Err(bad());
    };
    let num = |v: &str, digits: usize| -> Result<i64, String> {
        if v.len() != digits || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        v.parse::<i64>().map_err(|_| bad())
    };
    let (year, month, day) = (num(y, 4)?, num(mo, 2)?, num(da, 2)?);
    let (hour, minute, second) = (num(h, 2)?, num(mi, 2)?, num(se, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return Err(format!("{s:?} is not a valid date and time"));
    }
    let millis = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // First three digits are milliseconds; finer digits are dropped.
        let padded = format!("{frac:0<3}");
        padded[..3].parse::<i64>().map_err(|_| bad())?
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - zone_offset_min * 60;
    Ok(seconds * 1000 + millis)
}

/// Splits `HH:MM:SS[.fff]<zone>` into the time and the zone's offset in minutes.
fn split_zone(rest: &str) -> Option<(&str, i64)> {
    if let Some(time) = rest.strip_suffix('Z') {
        return Some((time, 0));
    }
    // A sign after the seconds starts a `+HH:MM` / `-HH:MM` offset.
    match rest
        .char_indices()
        .rev()
        .find(|(_, c)| *c == '+' || *c == '-')
    {
        None => Some((rest, 0)),
        Some((i, sign)) => {
            let (time, zone) = (&rest[..i], &rest[i + 1..]);
            let (zh, zm) = zone.split_once(':').unwrap_or((zone, "00"));
            if zh.len() != 2 || zm.len() != 2 {
                return None;
            }
            let minutes = zh.parse::<i64>().ok()? * 60 + zm.parse::<i64>().ok()?;
            Some((time, if sign == '-' { -minutes } else { minutes }))
        }
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00"), Ok(0));
        assert_eq!(parse_iso_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_iso_ms("2001-09-09T01:46:40Z"), Ok(1_000_000_000_000));
        assert_eq!(
            parse_iso_ms("2024-02-29T12:00:00.250Z"),
            Ok(1_709_208_000_250)
        );
        assert_eq!(
            parse_iso_ms("2024-02-29T13:30:00.25+01:30"),
            Ok(1_709_208_000_250)
        );
        assert_eq!(
            parse_iso_ms("2024-02-29T10:00:00-02:00"),
            Ok(1_709_208_000_000)
        );
        assert_eq!(parse_iso_ms("1969-12-31T23:59:59Z"), Ok(-1000));
    }

    #[test]
    fn rejects_malformed_and_impossible() {
        for s in [
            "",
            "2024-02-29",
            "2024-02-30T00:00:00",
            "2023-02-29T00:00:00",
            "2024-13-01T00:00:00",
            "2024-01-01T24:00:00",
            "2024-01-01T00:00",
            "24-01-01T00:00:00",
            "2024-01-01T00:00:00.x",
            "2024-01-01T00:00:00+1",
            "2024-01-01 00:00:00",
        ] {
            assert!(parse_iso_ms(s).is_err(), "{s:?} accepted");
        }
    }
}
