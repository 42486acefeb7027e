//! The wire format: generated protobuf types, tensor (de)serialisation and request validation.
//! Everything here turns client bytes into checked domain values, or into a status saying what was
//! expected.

pub mod dicom;
pub mod kserve;
pub mod tensor;
pub mod validate;

/// Generated from `proto/inferd/v1/recon.proto`.
pub mod pb {
    tonic::include_proto!("inferd.v1");
    /// Serialized descriptors (for gRPC reflection).
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inferd_descriptor");

    impl Sampling {
        /// A mask the server generates: 1-D variable-density random lines at `acceleration` with
        /// the default fully sampled centre, reproducible from `seed`.
        pub fn variable_density(acceleration: f32, seed: u64) -> Self {
            Sampling {
                kind: Some(sampling::Kind::Generated(MaskSpec {
                    pattern: mask_spec::Pattern::VariableDensity1d as i32,
                    acceleration,
                    center_fraction: 0.0,
                    seed,
                })),
            }
        }
    }
}
