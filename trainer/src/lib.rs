//! The sirocco trainer library.
pub mod devices;
