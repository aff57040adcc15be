//! When a member is expected: weekly windows such as `mon-fri 08:00-17:00` (a cleaner
//! seen at 3 am is not "the cleaner" in the same way). Windows that end before they start
//! run past midnight (`daily 22:00-06:00`) and belong to the day they start on.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One weekly window. `days` is a bitmask, Monday = bit 0 ... Sunday = bit 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub days: u8,
    pub start_min: u16,
    pub end_min: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleStatus {
    Within,
    Outside,
    /// The member has no schedule: any time is as good as any other.
    None,
}

impl Schedule {
    /// Whether `weekday` (0 = Monday) at `minute` of the local day falls in the window.
    pub fn contains(&self, weekday: u32, minute: u32) -> bool {
        let on = |d: u32| self.days & (1 << (d % 7)) != 0;
        let (s, e) = (u32::from(self.start_min), u32::from(self.end_min));
        if s < e {
            on(weekday) && (s..e).contains(&minute)
        } else {
            (on(weekday) && minute >= s) || (on(weekday + 6) && minute < e)
        }
    }
}

/// Status of a member with `schedules` at unix time `unix_secs`, in a zone `utc_offset_min`
/// minutes east of UTC.
pub fn status(schedules: &[Schedule], unix_secs: i64, utc_offset_min: i32) -> ScheduleStatus {
    if schedules.is_empty() {
        return ScheduleStatus::None;
    }
    let local = unix_secs + i64::from(utc_offset_min) * 60;
    let days = local.div_euclid(86_400);
    // 1970-01-01 was a Thursday (weekday 3 counting from Monday = 0).
    let weekday = (days + 3).rem_euclid(7) as u32;
    let minute = (local.rem_euclid(86_400) / 60) as u32;
    if schedules.iter().any(|s| s.contains(weekday, minute)) {
        ScheduleStatus::Within
    } else {
        ScheduleStatus::Outside
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

fn parse_day(s: &str) -> Option<u32> {
    DAY_NAMES.iter().position(|d| *d == s).map(|i| i as u32)
}

fn parse_days(s: &str) -> Option<u8> {
    match s {
        "daily" => return Some(0x7F),
        "weekdays" => return Some(0x1F),
        "weekends" => return Some(0x60),
        _ => {}
    }
    let mut mask = 0u8;
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse_day(a)?, parse_day(b)?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << parse_day(part)?,
        }
    }
    (mask != 0).then_some(mask)
}

impl FromStr for Schedule {
    type Err = String;

    /// `DAYS HH:MM-HH:MM`, DAYS being `daily`, `weekdays`, `weekends`, or a comma list of
    /// days and day ranges (`mon-fri`, `sat,sun`, `fri-mon`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "schedule {s:?}: expected DAYS HH:MM-HH:MM, e.g. \"mon-fri 08:00-17:00\" or \"daily 22:00-06:00\""
            )
        };
        let lower = s.trim().to_ascii_lowercase();
        let (days, times) = lower.split_once(' ').ok_or_else(bad)?;
        let (a, b) = times.trim().split_once('-').ok_or_else(bad)?;
        let sched = Schedule {
            days: parse_days(days.trim()).ok_or_else(bad)?,
            start_min: parse_hhmm(a.trim()).ok_or_else(bad)?,
            end_min: parse_hhmm(b.trim()).ok_or_else(bad)?,
        };
        if sched.start_min == sched.end_min {
            return Err(format!("schedule {s:?}: start and end are the same time"));
        }
        Ok(sched)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days: Vec<&str> = (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| DAY_NAMES[d])
            .collect();
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02}",
            days.join(","),
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 was a Monday.
    const MON_0000_UTC: i64 = 1_795_392_000;

    fn at(day: i64, h: i64, m: i64) -> i64 {
        MON_0000_UTC + day * 86_400 + h * 3600 + m * 60
    }

    #[test]
    fn parses_and_prints_windows() {
        let s: Schedule = "Mon-Fri 08:00-17:30".parse().unwrap();
        assert_eq!((s.days, s.start_min, s.end_min), (0x1F, 480, 1050));
        assert_eq!(s.to_string(), "mon,tue,wed,thu,fri 08:00-17:30");
        assert_eq!(
            "fri-mon 10:00-11:00".parse::<Schedule>().unwrap().days,
            0b111_0001
        );
        for bad in [
            "",
            "mon",
            "mon 8-17",
            "funday 08:00-09:00",
            "mon 25:00-26:00",
            "mon 08:00-08:00",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn status_follows_days_hours_and_midnight_wrap() {
        let day: Schedule = "mon-fri 08:00-17:00".parse().unwrap();
        let night: Schedule = "fri 22:00-06:00".parse().unwrap();
        assert_eq!(status(&[], at(0, 9, 0), 0), ScheduleStatus::None);
        assert_eq!(status(&[day], at(0, 9, 0), 0), ScheduleStatus::Within);
        assert_eq!(status(&[day], at(0, 17, 0), 0), ScheduleStatus::Outside);
        assert_eq!(status(&[day], at(5, 9, 0), 0), ScheduleStatus::Outside); // Saturday
        assert_eq!(status(&[night], at(4, 23, 0), 0), ScheduleStatus::Within); // Fri 23:00
        assert_eq!(status(&[night], at(5, 5, 59), 0), ScheduleStatus::Within); // Sat 05:59
        assert_eq!(status(&[night], at(5, 23, 0), 0), ScheduleStatus::Outside); // Sat 23:00
        assert_eq!(status(&[night], at(3, 5, 0), 0), ScheduleStatus::Outside); // Thu 05:00
                                                                               // 07:30 UTC is 08:30 at UTC+1.
        assert_eq!(status(&[day], at(0, 7, 30), 60), ScheduleStatus::Within);
        assert_eq!(status(&[day], at(0, 7, 30), 0), ScheduleStatus::Outside);
    }
}
