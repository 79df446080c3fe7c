//! The `meshnet` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    meshnet::main()
}
