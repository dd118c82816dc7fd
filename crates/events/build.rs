//! Generates the Rust types of `proto/orders/v1/*.proto` into `OUT_DIR`.
//!
//! `protox` parses the schemas in pure Rust (well-known types such as
//! `google.protobuf.Timestamp` included) and `prost-build` generates the code
//! from the descriptors, so no `protoc` binary is needed.

use std::path::PathBuf;

const FILES: [&str; 3] = ["orders/v1/events.proto", "orders/v1/commands.proto", "orders/v1/stats.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    for file in FILES {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(FILES, [&root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
