fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps a fresh clone buildable without a system protobuf compiler.
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(
            std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("inferd_descriptor.bin"),
        )
        .compile_protos(
            &[
                "proto/inferd/v1/recon.proto",
                "proto/inferd/v1/bridge.proto",
                "proto/inferd/v1/graph.proto",
                "proto/inference/grpc_service.proto",
            ],
            &["proto"],
        )?;
    // TorchServe's inference API, for the load generator's side-by-side runs (client only; kept out
    // of the descriptor set that inferd's reflection serves).
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &[std::path::PathBuf::from("proto/torchserve/inference.proto")],
            &[
                std::path::PathBuf::from("proto"),
                protoc_bin_vendored::include_path()?,
            ],
        )?;
    println!("cargo:rerun-if-changed=proto");

    // The shipped default reconstruction model is embedded in the binary when present, so that
    // `inferd serve` works from any directory and inside a container without extra files.
    println!("cargo::rustc-check-cfg=cfg(inferd_embedded_recon)");
    println!("cargo:rerun-if-changed=models/recon-unrolled.safetensors");
    if std::path::Path::new("models/recon-unrolled.safetensors").exists() {
        println!("cargo:rustc-cfg=inferd_embedded_recon");
    }
    println!("cargo::rustc-check-cfg=cfg(inferd_embedded_radial)");
    println!("cargo:rerun-if-changed=models/recon-radial.safetensors");
    if std::path::Path::new("models/recon-radial.safetensors").exists() {
        println!("cargo:rustc-cfg=inferd_embedded_radial");
    }
    println!("cargo::rustc-check-cfg=cfg(inferd_embedded_graph)");
    println!("cargo:rerun-if-changed=models/lcm.safetensors");
    if std::path::Path::new("models/lcm.safetensors").exists() {
        println!("cargo:rustc-cfg=inferd_embedded_graph");
    }
    println!("cargo::rustc-check-cfg=cfg(inferd_embedded_bridge)");
    println!("cargo:rerun-if-changed=models/lightsb.safetensors");
    if std::path::Path::new("models/lightsb.safetensors").exists() {
        println!("cargo:rustc-cfg=inferd_embedded_bridge");
    }
    Ok(())
}
