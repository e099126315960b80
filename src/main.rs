//! The `minordpo` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    minordpo::cli::main()
}
