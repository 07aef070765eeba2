//! What the node speaks: messages with its local clients ([`local`]) and
//! with other peers ([`peer`]), the frames both travel in ([`codec`]), and
//! the encoded form of an object ([`blob`]).

pub mod blob;
pub mod codec;
pub mod local;
pub mod peer;
