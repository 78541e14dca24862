//! Generates the Rust types and tonic stubs from the workspace `proto/` tree.
//!
//! protoc comes from `protoc-bin-vendored` and is handed to prost-build
//! directly. We never set the `PROTOC` environment variable: it would leak into
//! other crates' build scripts that pick their own protoc.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "v3lockpb/v3lock.proto",
    "v3electionpb/v3election.proto",
    "keelpb/internal.proto",
    "keelpb/peer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let files: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();

    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let descriptors = PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    config.file_descriptor_set_path(&descriptors);

    // Service stubs only with the `grpc` feature; messages always.
    let grpc = std::env::var_os("CARGO_FEATURE_GRPC").is_some();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        // Services grow method by method across issues; an unwritten method
        // answers Unimplemented, as etcd does for methods it lacks.
        .generate_default_stubs(true)
        .compile_with_config(config, &files, &[proto_root])?;
    json(&descriptors)
}

/// With the `json` feature: serde for the etcd API's messages, with their
/// .proto field names (grpc-gateway's `OrigName`).
#[cfg(feature = "json")]
fn json(descriptors: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(descriptors)?)?
        .preserve_proto_field_names()
        // grpc-gateway (etcd 3.4) takes and drops fields it does not know.
        .ignore_unknown_fields()
        .build(&[".mvccpb", ".authpb", ".etcdserverpb", ".v3lockpb", ".v3electionpb"])?;
    Ok(())
}

#[cfg(not(feature = "json"))]
fn json(_descriptors: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    Ok(())
}
