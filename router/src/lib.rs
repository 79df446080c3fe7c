//! meshnet-router (placeholder, being written).
