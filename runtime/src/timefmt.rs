//! RFC 3339 timestamps as Go prints them (runc's `created` and log `time` fields),
//! without pulling a date library into a binary that must start fast.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-22T07:42:53.507090149Z`: Go's RFC3339Nano, trailing zeros of the fraction trimmed.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut s = rfc3339_secs_no_z(d.as_secs());
    let nanos = d.subsec_nanos();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `2026-11-22T07:42:53Z`: whole seconds, as logrus writes `time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut s = rfc3339_secs_no_z(d.as_secs());
    s.push('Z');
    s
}

fn rfc3339_secs_no_z(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_go() {
        let t = UNIX_EPOCH + Duration::new(1_795_333_373, 507_090_149);
        assert_eq!(rfc3339_nano(t), "2026-11-22T07:42:53.507090149Z");
        let t = UNIX_EPOCH + Duration::new(1_795_333_373, 500_000_000);
        assert_eq!(rfc3339_nano(t), "2026-11-22T07:42:53.5Z");
        assert_eq!(rfc3339(t), "2026-11-22T07:42:53Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // a leap day
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00Z");
    }
}
