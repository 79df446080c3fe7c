//! meshnet-ipam: sans-IO address ring (placeholder, being written).
