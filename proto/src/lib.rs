//! Generated Protobuf types and tonic services of Red Store, plus the encoded file descriptor set
//! used for server reflection.

#![allow(clippy::all, clippy::pedantic)]

pub mod redstore {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("redstore.common.v1");
        }
    }
    pub mod events {
        pub mod v1 {
            tonic::include_proto!("redstore.events.v1");
        }
    }
    pub mod inventory {
        pub mod v1 {
            tonic::include_proto!("redstore.inventory.v1");
        }
    }
    pub mod sales {
        pub mod v1 {
            tonic::include_proto!("redstore.sales.v1");
        }
    }
    pub mod analytics {
        pub mod v1 {
            tonic::include_proto!("redstore.analytics.v1");
        }
    }
    pub mod stream {
        pub mod v1 {
            tonic::include_proto!("redstore.stream.v1");
        }
    }
}

pub use redstore::{analytics::v1 as analytics, common::v1 as common, events::v1 as events};
pub use redstore::{inventory::v1 as inventory, sales::v1 as sales, stream::v1 as stream};

/// Encoded `FileDescriptorSet` of every Red Store contract, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("redstore_descriptor");
