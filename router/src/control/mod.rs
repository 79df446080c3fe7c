//! The control connection: TCP/6783 and the per-connection tasks that move bytes between a
//! socket and the driver. The header, Noise handshake and message framing are
//! `meshnet_mesh::handshake`; these tasks only read, write and time.

pub mod conn;
