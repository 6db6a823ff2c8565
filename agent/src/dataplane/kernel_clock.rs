//! The programs stamp events with `bpf_ktime_get_boot_ns`: `CLOCK_BOOTTIME`, which counts
//! from boot and goes on counting through suspend. Wall-clock time is `CLOCK_REALTIME`,
//! which NTP and people may step. Their difference is measured here and measured again
//! before each batch of events is converted, so a step of the wall clock is followed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `CLOCK_REALTIME - CLOCK_BOOTTIME`, in nanoseconds, at the time it was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelClock {
    offset_ns: i128,
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; both clocks exist on every Linux this
    // runs on (BPF needs 4.x and more), so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// `CLOCK_BOOTTIME` now, in nanoseconds: what a program reading the clock now would see.
pub fn boot_ns() -> u64 {
    read(libc::CLOCK_BOOTTIME) as u64
}

impl KernelClock {
    /// Measures the offset: the realtime read between two boottime reads, taking the
    /// pair read closest together of a few (a preemption between reads would skew it).
    pub fn measure() -> KernelClock {
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..5 {
            let before = read(libc::CLOCK_BOOTTIME);
            let real = read(libc::CLOCK_REALTIME);
            let after = read(libc::CLOCK_BOOTTIME);
            let gap = after - before;
            let offset = real - (before + gap / 2);
            if best.is_none_or(|(g, _)| gap < g) {
                best = Some((gap, offset));
            }
        }
        KernelClock {
            offset_ns: best.map_or(0, |(_, offset)| offset),
        }
    }

    #[cfg(test)]
    fn with_offset(offset_ns: i128) -> KernelClock {
        KernelClock { offset_ns }
    }

    /// The wall-clock time of a kernel timestamp (`CLOCK_BOOTTIME` nanoseconds).
    pub fn wall_time(&self, boot_ns: u64) -> SystemTime {
        let unix_ns = (i128::from(boot_ns) + self.offset_ns).max(0);
        let secs = (unix_ns / 1_000_000_000) as u64;
        let nanos = (unix_ns % 1_000_000_000) as u32;
        UNIX_EPOCH + Duration::new(secs, nanos)
    }
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_boot_time_to_the_wall_clock() {
        let clock = KernelClock::measure();
        let before = SystemTime::now();
        let converted = clock.wall_time(boot_ns());
        let after = SystemTime::now();
        // Equal up to the measurement's own error (a few microseconds on an idle machine;
        // the bound is generous for shared CI machines, and far below what matters: the
        // clocks of a machine that has been suspended differ by the time it slept).
        let slack = Duration::from_millis(50);
        assert!(converted + slack >= before, "{converted:?} < {before:?}");
        assert!(converted <= after + slack, "{converted:?} > {after:?}");
    }

    #[test]
    fn adds_the_offset_exactly() {
        let clock = KernelClock::with_offset(1_700_000_000_123_456_789);
        assert_eq!(
            clock.wall_time(5_000_000_001),
            UNIX_EPOCH + Duration::new(1_700_000_005, 123_456_790)
        );
        assert_eq!(unix_ns(clock.wall_time(0)), 1_700_000_000_123_456_789);
    }
}
