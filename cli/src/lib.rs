//! meshnet CLI library (being written).

pub mod lab;
