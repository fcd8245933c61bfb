//! Makes the worker binary find its libtorch without LD_LIBRARY_PATH, and able to use CUDA
//! when the libtorch it is built against has it.
//!
//! torch-sys passes `-rpath` only to its own C++ compile, so a crate that links libtorch must
//! add it for its own binaries. `DEP_TCH_LIBTORCH_LIB` is exported by torch-sys (links = "tch")
//! to crates that depend on it directly.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // The linker drops libtorch_cuda.so under --as-needed (nothing references its symbols
    // directly) and CUDA is then silently unavailable: keep it when it is there.
    if Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-cfg=hypersweep_cuda");
    }
    println!("cargo:rustc-check-cfg=cfg(hypersweep_cuda)");
}
