//! vessel's image layer: an OCI image-layout store on disk (readable and writable by skopeo, umoci and podman),
//! a registry client for the OCI distribution spec, safe unpacking of layers, overlay snapshots for containers
//! and ext4 disk images for microVMs. See DESIGN.md for the API the parts share.

pub mod ext4;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;
