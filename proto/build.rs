//! Compiles the .proto files with the vendored `protoc`, so a fresh machine
//! needs no system protobuf compiler, and writes one descriptor set per
//! package for gRPC server reflection.

use std::{env, error::Error, path::PathBuf};

/// One entry per package: its .proto files and the descriptor set name.
const PACKAGES: &[(&[&str], &str)] = &[
    (&["bangui/geo/v1/geo.proto"], "bangui_geo_v1_descriptor.bin"),
    (
        &[
            "bangui/control/v1/jail.proto",
            "bangui/control/v1/auth.proto",
            "bangui/control/v1/settings.proto",
            "bangui/control/v1/cluster.proto",
            "bangui/control/v1/history.proto",
            "bangui/control/v1/blocklist.proto",
            "bangui/control/v1/host.proto",
        ],
        "bangui_control_v1_descriptor.bin",
    ),
    (&["bangui/agent/v1/agent.proto"], "bangui_agent_v1_descriptor.bin"),
];

fn main() -> Result<(), Box<dyn Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let well_known = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    // Our own rerun lines: only these inputs change the generated code.
    println!("cargo:rerun-if-changed=build.rs");
    for (protos, descriptor) in PACKAGES {
        for proto in *protos {
            println!("cargo:rerun-if-changed={proto}");
        }
        let protos: Vec<PathBuf> = protos.iter().map(PathBuf::from).collect();
        let mut config = tonic_prost_build::Config::new();
        config.protoc_executable(&protoc);
        tonic_prost_build::configure()
            .emit_rerun_if_changed(false)
            .file_descriptor_set_path(out_dir.join(descriptor))
            .compile_with_config(config, &protos, &[PathBuf::from("."), well_known.clone()])?;
    }
    Ok(())
}
