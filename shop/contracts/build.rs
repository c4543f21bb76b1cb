//! The shop's gRPC code, generated from its `.proto` files by protox (a compiler in Rust: no
//! `protoc` on the machine) and tonic; the compiled descriptors are kept for contract tests.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/flotilla/shop/inventory/v1/inventory.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("shop_descriptors.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
