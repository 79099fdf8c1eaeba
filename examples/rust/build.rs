// SPDX-License-Identifier: BSD-2-Clause
// Generates the gRPC client and server of proto/demo.proto with the protoc
// that the protoc-bin-vendored crate ships: no system protoc needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/demo.proto");
    tonic_prost_build::configure().compile_protos(&["proto/demo.proto"], &["proto"])?;
    Ok(())
}
