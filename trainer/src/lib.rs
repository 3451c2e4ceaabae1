//! The sirocco trainer library.
