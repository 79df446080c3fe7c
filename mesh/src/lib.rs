//! meshnet-mesh: the sans-IO control plane (placeholder, being written).
