// A general-purpose allocator that is much faster than glibc's for capstan's many small JSON
// values, and returns memory to the system more readily.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    capstan::cli::main()
}
