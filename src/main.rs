//! The `sluice` binary: every command lives in `sluice::cli`.
fn main() -> std::process::ExitCode {
    sluice::cli::main()
}
