//! The ops, one family per file; each op's shape rule, emission and VJP sit together.
pub(crate) mod constant;
pub(crate) mod control;
pub(crate) mod dot;
pub(crate) mod elementwise;
pub(crate) mod gather;
pub(crate) mod misc;
pub(crate) mod reduce;
pub(crate) mod shape;
