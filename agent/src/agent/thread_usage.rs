//! What the calling thread used of the machine: for the compile's log line, which tells a
//! compile that waited for the CPU (CPU time well below its wall-clock time) or faulted its
//! memory in (page faults) from one that had work to do. The CPU time is the scheduler's
//! own (`CLOCK_THREAD_CPUTIME_ID`): `getrusage` counts it in timer ticks on this kind of
//! kernel, and said 0.0 ms for a compile of 1.2 ms.

use std::ops::{Add, Sub};
use std::time::Duration;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ThreadUsage {
    /// User and system time.
    pub cpu: Duration,
    /// Minor and major page faults.
    pub page_faults: u64,
}

impl ThreadUsage {
    /// The calling thread's usage so far; zero what the kernel does not say.
    pub fn now() -> ThreadUsage {
        // SAFETY: all zeros is a valid `rusage`.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid out-parameter for the call.
        let page_faults = if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } == 0 {
            (usage.ru_minflt.max(0) + usage.ru_majflt.max(0)) as u64
        } else {
            0
        };
        let mut cpu = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `cpu` is a valid out-parameter for the call.
        let cpu = if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut cpu) } == 0 {
            Duration::new(
                cpu.tv_sec.max(0) as u64,
                cpu.tv_nsec.clamp(0, 999_999_999) as u32,
            )
        } else {
            Duration::ZERO
        };
        ThreadUsage { cpu, page_faults }
    }
}

impl Sub for ThreadUsage {
    type Output = ThreadUsage;

    fn sub(self, earlier: ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            page_faults: self.page_faults.saturating_sub(earlier.page_faults),
        }
    }
}

impl Add for ThreadUsage {
    type Output = ThreadUsage;

    fn add(self, other: ThreadUsage) -> ThreadUsage {
        ThreadUsage {
            cpu: self.cpu + other.cpu,
            page_faults: self.page_faults + other.page_faults,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_works_and_touches_new_memory_shows_both() {
        let before = ThreadUsage::now();
        let mut pages = vec![0u8; 64 << 20];
        for page in pages.chunks_mut(4096) {
            page[0] = 1;
        }
        let mut sum = 0u64;
        loop {
            sum = sum.wrapping_add(pages.iter().map(|b| u64::from(*b)).sum::<u64>());
            if (ThreadUsage::now() - before).cpu >= Duration::from_millis(20) {
                break;
            }
        }
        let used = ThreadUsage::now() - before;
        assert!(sum >= 16_384);
        assert!(used.cpu >= Duration::from_millis(20), "{used:?}");
        // 16,384 pages touched; a transparent huge page takes 512 of them at once.
        assert!(used.page_faults >= 32, "{used:?}");
    }

    #[test]
    fn cpu_time_is_counted_finer_than_a_timer_tick() {
        // Counted in ticks (4 ms at 250 Hz), the first reading past a millisecond would be
        // a whole tick; counted by the scheduler, it is just past a millisecond.
        let before = ThreadUsage::now();
        let mut x = 0u64;
        let used = loop {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            let used = (ThreadUsage::now() - before).cpu;
            if used >= Duration::from_millis(1) {
                break used;
            }
        };
        assert!(used < Duration::from_micros(1_500), "{used:?}");
    }
}
