//! The `mealkitz` binary: all of it lives in the library; see [`mealkitz::cli`].

fn main() -> std::process::ExitCode {
    mealkitz::cli::main()
}
