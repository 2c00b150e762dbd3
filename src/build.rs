//! Links GCC's unwinder statically (`libgcc_eh.a`, as `gcc -static-libgcc` does) where the
//! host C compiler has it, so that `shmxfer` does not load `libgcc_s.so.1` at every start:
//! that library's constructor runs `cpuid`, a trap to the hypervisor on a VM, a measurable
//! share of a one-file `send` (docs/benchmarks.md, "Design choices").
//! Unwinding and backtraces work the same; the binary is one program with one unwinder.
//! Anywhere this does not apply (another target, a cross build, a static build, no `cc`),
//! nothing changes and the standard library links `libgcc_s` as usual.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=src/build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    if let Some(dir) = static_unwinder_dir() {
        println!("cargo:rustc-link-search=native={}", dir.display());
        // Listed before the standard library's `-lgcc_s`, it provides the `_Unwind_*`
        // symbols first, and `--as-needed` then leaves `libgcc_s` out.
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}

/// The directory holding the C compiler's `libgcc_eh.a`, when linking it applies.
fn static_unwinder_dir() -> Option<PathBuf> {
    let var = |name: &str| env::var(name).unwrap_or_default();
    let native = var("TARGET") == var("HOST");
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let static_crt = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .any(|f| f == "crt-static");
    if !native || !linux_gnu || static_crt {
        return None;
    }
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without the file, the compiler prints the bare name back.
    if !out.status.success() || !path.is_absolute() || !path.is_file() {
        return None;
    }
    Some(path.parent()?.to_path_buf())
}
