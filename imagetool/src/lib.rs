//! skiff-image: OCI image store, import/export, unpack (copy and overlay) and commit.
//!
//! Library entry points (stable API for skiff-build and the shim):
//! - [`Store::open`] / [`Store::open_default`]: the store (an OCI layout + layer cache).
//! - [`resolve`]: `NAME[:TAG]`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME:TAG]` → [`Image`].
//! - [`unpack`]: image → bundle (`rootfs/` + `config.json`), [`Mode::Copy`] or [`Mode::Overlay`].
//! - [`diff`] / [`commit`]: bundle changes → layer / new tagged image.
//! - [`Store::write_layer`], [`Store::create_image`], [`Store::tag`]: build images layer by layer.
//! - [`import`] / [`export`]: move images in and out.

pub mod apply;
pub mod bundle;
pub mod digest;
pub mod error;
pub mod fsops;
pub mod layer;
pub mod layer_stream;
pub mod lower_link;
pub mod network;
mod random;
pub mod resources;
pub mod spec;
pub mod store;
pub mod transfer;
pub mod tree;
pub mod volumes;

pub use bundle::{
    bundle_image, commit, diff, read_meta, remount, remove_bundle, remove_bundle_and_volumes,
    umount, unpack, BundleMeta, Mode, UnpackOptions,
};
pub use error::{Error, Result};
pub use resources::{ResourceFlags, Resources};
pub use spec::SpecOptions;
pub use store::{full_name, History, Image, ImageSummary, LayerInfo, Store};
pub use transfer::{export, import, parse_reference, resolve, ImportOptions, Reference};

/// Re-export of the oci-spec crate so callers use the same version of its types.
pub use oci_spec;
