//! The `mealkitz` binary: all of it lives in the library; see [`mealkitz::cli`].

/// jemalloc rather than glibc's malloc: under dispatch load glibc's allocator was ~14 % of the
/// server's CPU; jemalloc took ~10 % off it at the same memory per driver (docs/performance.md,
/// "jemalloc, and machine J").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    mealkitz::cli::main()
}
