//! Optimizers as HLO graph builder functions (see issue: xla-optim). Not implemented yet.
