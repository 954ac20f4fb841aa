//! The process's memory footprint: settings for the two allocators in the process, and
//! handing memory back after a burst of allocation.
//!
//! Rust code allocates through mimalloc (the binary's global allocator); librdkafka, a C
//! library, through glibc's malloc. Both keep freed memory for reuse, which is fast but
//! shows up as resident memory an operator sized the machine for.

/// `mi_option_purge_delay` in mimalloc.h (the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Set both allocators up. Call first thing in `main`, before any other thread exists.
pub fn configure_allocators() {
    // Return freed memory to the OS after 10 ms instead of mimalloc's default second.
    // `MIMALLOC_PURGE_DELAY` in the environment still wins.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10) };
    }
    limit_glibc_arenas();
}

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
