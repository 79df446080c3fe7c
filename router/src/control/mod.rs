//! The control connection: TCP/6783, weave's header, Noise, encrypted
//! message transport, and the per-connection tasks that move bytes between
//! a socket and the driver.

pub mod conn;
pub mod noise;
pub mod transport;
