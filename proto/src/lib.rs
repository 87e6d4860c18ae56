//! The gRPC contracts of the BanGUI services, compiled for tonic.
//!
//! One module per versioned protobuf package (`bangui.geo.v1` →
//! [`geo::v1`]). Each package also exports its encoded `FileDescriptorSet`
//! for gRPC server reflection. The generated code is compiled at build time
//! with a vendored `protoc`; lint relaxations for it stay in this crate.

/// `bangui.geo.v1`: where IP addresses are.
pub mod geo {
    /// Version 1 of the geo API.
    #[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("bangui.geo.v1");

        /// The encoded descriptor set of `bangui.geo.v1` and its imports,
        /// for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bangui_geo_v1_descriptor");
    }
}

/// `bangui.control.v1`: fail2ban, history, auth and jobs.
pub mod control {
    /// Version 1 of the control API.
    #[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("bangui.control.v1");

        /// The encoded descriptor set of `bangui.control.v1` and its
        /// imports, for server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bangui_control_v1_descriptor");
    }
}

/// `bangui.agent.v1`: what a fail2ban-agent speaks to the control plane.
pub mod agent {
    /// Version 1 of the agent protocol.
    #[allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    pub mod v1 {
        tonic::include_proto!("bangui.agent.v1");

        /// The encoded descriptor set of `bangui.agent.v1`, for server
        /// reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bangui_agent_v1_descriptor");
    }
}

pub use prost_types;
