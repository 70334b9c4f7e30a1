//! The container shim as a standalone binary (for tests; production uses `berth shim`).

fn main() -> std::process::ExitCode {
    berth_agent::runtime::shim::main()
}
