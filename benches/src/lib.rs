//! Benchmarks and measurement harnesses of the sans-IO crates.
//!
//! - `benches/*.rs`: criterion micro-benchmarks (`cargo bench -p meshnet-benches`).
//! - [`scale`]: the mesh at N peers in the simulator, with the figures of `bin/scale.rs`
//!   (`cargo run --release -p meshnet-benches --bin scale -- --peers 1000`).
//! - [`alloc`]: a counting global allocator, for the memory figure.

pub mod alloc;
pub mod scale;
