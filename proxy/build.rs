//! Compiles the wait shim (shim/wait.c) into a static binary that the proxy
//! embeds and bind-mounts into containers as their first process.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bin = out.join("meshnet-wait");
    println!("cargo:rerun-if-changed=shim/wait.c");
    let cc = std::env::var("MESHNET_SHIM_CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=MESHNET_SHIM_CC");
    let status = Command::new(&cc)
        .args(["-static", "-Os", "-s", "-Wall", "-Werror", "-o"])
        .arg(&bin)
        .arg("shim/wait.c")
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {cc} to build the wait shim: {e}; install gcc and libc6-dev")
        });
    assert!(
        status.success(),
        "{cc} -static failed to build the wait shim (shim/wait.c); install libc6-dev (static libc)"
    );
}
