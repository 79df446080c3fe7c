//! Benchmarks live in `benches/`: `cargo bench -p meshnet-benches`.
