//! The `minordpo` binary: everything lives in the library's `cli` module.

/// The system allocator with a cache of large freed blocks (see `io::large_blocks`).
#[global_allocator]
static ALLOCATOR: minordpo::io::ProcessAllocator = minordpo::io::ProcessAllocator;

fn main() -> std::process::ExitCode {
    minordpo::cli::main()
}
