//! Allocator settings for data loading.
//!
//! A loader allocates a fresh batch buffer for every batch (a 64×3×224×224 f32 batch is 38.5 MB)
//! and fresh per-image buffers in every worker. glibc's default `malloc` serves blocks above its
//! mmap threshold (at most 32 MB) with `mmap` and unmaps them on `free`, and trims worker arenas
//! back to the OS, so the next batch page-faults its memory in again: measured here, 20% of a
//! worker's time went to page faults and zeroing fresh pages.
//!
//! [`tune_for_loading`] turns that off for the process: blocks come from the heap and freed memory
//! is kept for reuse. The cost is that the process keeps its peak heap (about one batch per worker
//! plus prefetch) instead of returning it to the OS. `kiln` calls it at start-up; a program using
//! the loader directly can call it first thing in `main`. Setting the environment variable
//! `KILN_DEFAULT_MALLOC` (to anything) keeps glibc's defaults, for a smaller resident footprint.

/// Keeps freed memory for reuse instead of unmapping it (glibc: `M_MMAP_MAX = 0`,
/// `M_TRIM_THRESHOLD = 1 GiB`, and `M_ARENA_MAX = 1`, because a worker's arena is an mmap'd heap
/// of at most 64 MB that glibc unmaps as soon as the consumer frees the batch in it). Returns whether the settings were applied: `false` on other C
/// libraries and platforms, where it does nothing, and when `KILN_DEFAULT_MALLOC` is set.
pub fn tune_for_loading() -> bool {
    if std::env::var_os("KILN_DEFAULT_MALLOC").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes malloc's tuning parameters; glibc takes its own lock, and
        // both parameters accept any non-negative value.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
                && libc::mallopt(libc::M_ARENA_MAX, 1) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
