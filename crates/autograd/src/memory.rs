//! The allocator policy a training loop wants: keep freed memory in the process.
//!
//! A training step frees every activation and gradient when it ends and allocates the same sizes
//! again when the next one starts. glibc's `malloc` gives large freed blocks straight back to the
//! kernel: blocks above its (adaptive) mmap threshold are unmapped, and the top of the heap is
//! trimmed once more than a few tens of MB lie free there. The next step then faults the same
//! memory back in, page by page, each page zeroed by the kernel first. On the VMs pglm is measured
//! on, that costs about 1 ms per MB: a linear layer's forward and backward at config L took 59-67 ms
//! instead of 42 ms, and a whole training step 4-20% longer (docs/PERFORMANCE.md).
//!
//! [`keep_freed_memory`] tells `malloc` to keep what is freed (the process's footprint stays at its
//! peak, which a training loop reaches every step anyway), and to serve every thread from the one
//! arena those settings keep. Without the latter, a thread of rayon's pool allocates from an
//! arena of its own, which hands freed memory back all the same: an RL update run on a pool
//! worker (as `pglm_trainer` runs it) took about 3,600 page faults more per update and ran
//! 34-49 ms in its forward instead of 33-34 (docs/PERFORMANCE.md). It is a process-wide setting,
//! so the library never calls it on its own: binaries call it once at start (`pglm`,
//! `cargo xtask`, the examples). Other allocators and platforms are left alone.

/// Largest mmap threshold glibc accepts on 64-bit targets (half its 64 MiB heap size): blocks up to
/// 32 MiB come from the heap, where freed memory can be reused without a trip to the kernel.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Sets glibc's `malloc` to keep freed memory for reuse instead of returning it to the kernel:
/// mmap threshold 32 MiB, trimming of the heap top off, one arena for all threads. Returns whether
/// the settings took effect (false on other allocators and platforms, where it does nothing).
///
/// The arena setting binds threads that have not allocated yet: call it before starting threads
/// (rayon's pool starts on its first use).
///
/// Call it once at the start of a program that trains; it is safe to call more than once.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes three of glibc's tuning parameters (under its main
        // arena's lock); it takes plain integers and touches no memory of ours. The parameters and
        // the ranges of their values are documented in mallopt(3); glibc rejects others with 0.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) };
        // A step allocates a few hundred large blocks, so the shared arena's lock costs little.
        let arenas = unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        mmap == 1 && trim == 1 && arenas == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Minor page faults taken by the calling thread so far.
    fn thread_minor_faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `getrusage` fills the struct it is given; zeroed `rusage` is a valid value.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
        assert_eq!(rc, 0, "getrusage");
        // SAFETY: initialised above (zeroed, then filled by the successful call).
        unsafe { usage.assume_init() }.ru_minflt
    }

    /// Faults taken while filling four fresh 12 MiB blocks held at once (12,288 pages), the way a
    /// step holds its activations, then freeing them all, the way a step ends.
    fn faults_filling_a_step() -> i64 {
        let before = thread_minor_faults();
        let blocks: Vec<Vec<f32>> = (0..4).map(|_| vec![1.0f32; 3 << 20]).collect();
        std::hint::black_box(&blocks);
        thread_minor_faults() - before
    }

    #[test]
    fn a_freed_step_is_reused_without_faulting_its_pages_again() {
        assert!(keep_freed_memory());
        assert!(keep_freed_memory(), "a second call is harmless");
        faults_filling_a_step(); // the first step faults its pages in
        // Another test thread may take some of the freed memory in between: one clean round out of
        // three is the proof. With glibc's defaults every round faults its 12,288 pages in again
        // (48 MiB freed at once is above the adaptive trim threshold).
        let rounds: Vec<i64> = (0..3).map(|_| faults_filling_a_step()).collect();
        assert!(rounds.iter().any(|&f| f < 200), "page faults per step: {rounds:?}");
    }
}
