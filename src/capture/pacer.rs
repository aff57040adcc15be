//! Real-time pacing for sources that make their own frames (synthetic, replay).

use std::time::Duration;

use crate::clock::Clock;

/// Hands out frame slots on a fixed schedule. A slot missed because the loop fell behind
/// is skipped and counted rather than delivered late in a burst, as a camera would.
#[derive(Debug, Clone)]
pub struct Pacer {
    period_us: i64,
    next_us: Option<i64>,
    paced: bool,
}

impl Pacer {
    pub fn new(fps: f64, paced: bool) -> Self {
        Self {
            period_us: (1_000_000.0 / fps).round().max(1.0) as i64,
            next_us: None,
            paced,
        }
    }

    /// Wait for the next slot. Returns its timestamp (monotonic µs) and how many slots
    /// were skipped before it.
    pub fn wait(&mut self, clock: &dyn Clock) -> (i64, u64) {
        let now = clock.mono_us();
        if !self.paced {
            return (now, 0);
        }
        let next = *self.next_us.get_or_insert(now);
        let (slot, skipped) = if now < next {
            clock.sleep(Duration::from_micros((next - now) as u64));
            (next, 0)
        } else {
            let missed = (now - next) / self.period_us;
            (next + missed * self.period_us, missed as u64)
        };
        self.next_us = Some(slot + self.period_us);
        (slot, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn paces_on_schedule_and_counts_missed_slots() {
        let clock = ManualClock::new(1_000_000, 0);
        let mut p = Pacer::new(10.0, true);
        assert_eq!(p.wait(&clock), (1_000_000, 0));
        // On time: sleeps to the slot.
        assert_eq!(p.wait(&clock), (1_100_000, 0));
        assert_eq!(clock.mono_us(), 1_100_000);
        // 350 ms of work: slots at 1.2, 1.3 and 1.4 s are gone, 1.4 is served late.
        clock.advance(Duration::from_millis(350));
        assert_eq!(p.wait(&clock), (1_400_000, 2));
        assert_eq!(p.wait(&clock), (1_500_000, 0));
    }
}
