//! Compiles `proto/sweep.proto` with a vendored `protoc`, so building needs no system protobuf.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("sweep_descriptor.bin"))
        .compile_protos(&["proto/sweep.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/sweep.proto");
    Ok(())
}
