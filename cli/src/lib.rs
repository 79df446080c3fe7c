//! meshnet CLI library (placeholder).
