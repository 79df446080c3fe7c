//! meshnet-router: the daemon shell around the sans-IO core (being written).

pub mod datapath;
