//! The process's memory footprint: settings for the two allocators in the process, and
//! handing memory back after a burst of allocation.
//!
//! Rust code allocates through mimalloc (the binary's global allocator); librdkafka, a C
//! library, through glibc's malloc. Both keep freed memory for reuse, which is fast but
//! shows up as resident memory an operator sized the machine for.

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the Rust bindings name no
/// constant for it; mimalloc 2 numbers its options differently).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before returning it to the OS.
const PURGE_DELAY_MS: std::ffi::c_long = 50;

/// Set both allocators up. Call first thing in `main`, before any other thread exists.
pub fn configure_allocators() {
    // Return freed memory to the OS after 50 ms instead of mimalloc's default second: the
    // pipeline frees batch buffers steadily, and a second of them is resident memory an
    // operator has to size for. `MIMALLOC_PURGE_DELAY` in the environment still wins.
    // SAFETY: reads a constant.
    let mimalloc_3 = unsafe { libmimalloc_sys::mi_version() } / 10_000 == 3;
    if mimalloc_3 && std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        disable_transparent_huge_pages();
    }
    limit_glibc_arenas();
}

/// mimalloc asks for transparent huge pages on its memory. Purging then returns pieces of
/// a 2 MiB page, and the next fault in it has the kernel zero a whole 2 MiB again: under
/// load that was ~9 % of the host's CPU, and peak RSS was higher (docs/benchmark.md).
/// mimalloc's own switch (`MIMALLOC_ALLOW_THP=0`) is read before `main` runs, too late
/// for its first arena, so this turns them off for the process; setting that variable
/// leaves the choice to mimalloc.
#[cfg(target_os = "linux")]
fn disable_transparent_huge_pages() {
    // SAFETY: prctl with a documented option and integer arguments. It fails only on
    // kernels before 3.15, which then keep huge pages: slower, not wrong.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(target_os = "linux"))]
fn disable_transparent_huge_pages() {}

/// glibc gives each thread that allocates its own arena (up to eight per core), and each
/// arena keeps what its thread freed. With one arena, librdkafka's threads held 4–7 MiB
/// less at peak in the benchmark, with no throughput change that could be measured there
/// (`docs/benchmark.md`). `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_glibc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt with a documented parameter, before any other thread exists.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_glibc_arenas() {}

/// Return what this thread freed to the OS now. Compiling a plugin allocates tens of MiB
/// and frees it on the calling thread, which then often goes quiet (the start-up thread,
/// the reload thread); mimalloc only purges a thread's free pages when that thread
/// allocates again, so without this the memory stays resident until the next reload.
/// A no-op in processes whose global allocator is not mimalloc (tests).
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option number is copied from a C header: a mimalloc upgrade that renumbered it
    /// would silently set some other option. It is recognised by its default.
    #[test]
    fn purge_delay_option_number_matches_the_linked_mimalloc() {
        // SAFETY: reads a constant.
        assert_eq!(unsafe { libmimalloc_sys::mi_version() } / 10_000, 3);
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option; tests never set one.
            let value = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
            assert_eq!(
                value, 1000,
                "option {MI_OPTION_PURGE_DELAY} is not the purge delay"
            );
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off_for_the_process() {
        disable_transparent_huge_pages();
        // SAFETY: prctl with a documented option.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1);
    }
}
