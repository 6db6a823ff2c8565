//! What the calling thread used of the machine (`getrusage(RUSAGE_THREAD)`): for the
//! compile's log line, which tells a compile that waited for the CPU (CPU time well below
//! its wall-clock time) or faulted its memory in (page faults) from one that had work to do.

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
    /// The calling thread's usage so far; zero if the kernel does not say.
    pub fn now() -> ThreadUsage {
        // SAFETY: all zeros is a valid `rusage`.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `usage` is a valid out-parameter for the call.
        if unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) } != 0 {
            return ThreadUsage::default();
        }
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec.max(0) as u64)
                + Duration::from_micros(t.tv_usec.max(0) as u64)
        };
        ThreadUsage {
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            page_faults: (usage.ru_minflt.max(0) + usage.ru_majflt.max(0)) as u64,
        }
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
}
