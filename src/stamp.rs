//! Times as the web API and MQTT give them: ISO-8601 with its offset, and the epoch, side
//! by side.

use serde::Serialize;

/// One instant: `{"iso": "2026-12-07T17:25:52.123+00:00", "epoch": 1796664352.123}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stamp {
    pub iso: String,
    /// Seconds since 1970-01-01 UTC.
    pub epoch: f64,
}

impl Stamp {
    /// From wall-clock microseconds since the epoch (UTC; the box keeps no time zone).
    pub fn from_wall_us(us: i64) -> Stamp {
        Stamp {
            iso: iso8601(us),
            epoch: us as f64 / 1e6,
        }
    }
}

/// Wall-clock seconds since the epoch (session expiry: real time, whatever the recorder's
/// clock is).
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `YYYY-MM-DDTHH:MM:SS.mmm+00:00` for wall microseconds `us`.
pub fn iso8601(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let ms = us.rem_euclid(1_000_000) / 1000;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}+00:00",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// The proleptic Gregorian date of day `z` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000+00:00");
        // 2000-02-29 (a leap day of a century leap year) 12:34:56.789
        assert_eq!(
            iso8601(951_827_696_789_000),
            "2000-02-29T12:34:56.789+00:00"
        );
        assert_eq!(iso8601(-1_000), "1969-12-31T23:59:59.999+00:00");
        assert_eq!(
            iso8601(4_102_444_800_000_000),
            "2100-01-01T00:00:00.000+00:00"
        );
        assert_eq!(Stamp::from_wall_us(1_500_000).epoch, 1.5);
    }
}
