//! What peers gossip, and the limits every message is checked against before use.
//!
//! Each message is an [`Envelope`]: the sender's sequence number and one [`Body`], encoded with
//! postcard. Sequence numbers start at the sender's start time in microseconds and grow by one per
//! message, so they also grow across restarts; receivers drop anything not newer than what they
//! last accepted from that sender.

use serde::{Deserialize, Serialize};

/// An object id as the node's store names it.
pub type ObjectId = [u8; 20];

/// Largest encoded message accepted or sent, checked before decoding.
pub const MAX_MESSAGE_BYTES: usize = 48 * 1024;
/// Most custom resources in one [`Load`].
pub const MAX_RESOURCES: usize = 64;
/// Longest custom resource name, in bytes.
pub const MAX_RESOURCE_NAME: usize = 64;
/// Most objects in one announcement message.
pub const MAX_OBJECTS_PER_MESSAGE: usize = 1024;

/// A peer's load as it gossips it a few times a second.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// CPUs this peer offers in total.
    pub cpus_total: f64,
    /// CPUs not in use right now.
    pub cpus_free: f64,
    /// Custom resources as `(name, total, free)`.
    pub resources: Vec<(String, f64, f64)>,
    /// Tasks waiting for a slot.
    pub queue_len: u64,
    /// Bytes in use in the object store.
    pub store_used: u64,
    /// Capacity of the object store in bytes.
    pub store_total: u64,
    /// Memory of this peer's GPUs in all, in bytes.
    pub gpu_memory: u64,
}

/// Large objects a peer holds: `(id, size in bytes)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct ObjectAnnouncements {
    pub objects: Vec<(ObjectId, u64)>,
}

/// One gossip message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// Sender's sequence number; only increasing ones are accepted.
    pub seq: u64,
    pub body: Body,
}

/// What a message carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Body {
    Load(Load),
    Objects(ObjectAnnouncements),
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    /// Encoded size over [`MAX_MESSAGE_BYTES`].
    #[error("message of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge {
        /// Encoded length.
        len: usize,
    },
    /// Not a postcard-encoded envelope.
    #[error("cannot decode message: {0}")]
    Decode(String),
    /// More than [`MAX_RESOURCES`] custom resources.
    #[error("{0} custom resources, at most {MAX_RESOURCES} allowed")]
    TooManyResources(usize),
    /// A resource name is empty or longer than [`MAX_RESOURCE_NAME`] bytes.
    #[error("resource name of {0} bytes, must be 1 to {MAX_RESOURCE_NAME}")]
    ResourceName(usize),
    /// A quantity is negative, not finite, or free exceeds total.
    #[error("{0} must be finite, non-negative, and free at most total")]
    BadQuantity(String),
    /// More than [`MAX_OBJECTS_PER_MESSAGE`] objects in one announcement.
    #[error("{0} objects in one announcement, at most {MAX_OBJECTS_PER_MESSAGE} allowed")]
    TooManyObjects(usize),
}

impl Load {
    /// Checks the limits a receiver enforces; a load that fails here is never sent.
    pub fn validate(&self) -> Result<(), MessageError> {
        check_pair("cpus", self.cpus_total, self.cpus_free)?;
        if self.resources.len() > MAX_RESOURCES {
            return Err(MessageError::TooManyResources(self.resources.len()));
        }
        for (name, total, free) in &self.resources {
            if name.is_empty() || name.len() > MAX_RESOURCE_NAME {
                return Err(MessageError::ResourceName(name.len()));
            }
            check_pair(name, *total, *free)?;
        }
        Ok(())
    }
}

/// Free may exceed total by rounding noise only.
fn check_pair(what: &str, total: f64, free: f64) -> Result<(), MessageError> {
    let ok = total.is_finite() && free.is_finite() && total >= 0.0 && free >= 0.0;
    if ok && free <= total * (1.0 + 1e-9) + 1e-9 {
        Ok(())
    } else {
        Err(MessageError::BadQuantity(what.to_owned()))
    }
}

impl Body {
    fn validate(&self) -> Result<(), MessageError> {
        match self {
            Body::Load(load) => load.validate(),
            Body::Objects(a) if a.objects.len() > MAX_OBJECTS_PER_MESSAGE => {
                Err(MessageError::TooManyObjects(a.objects.len()))
            }
            Body::Objects(_) => Ok(()),
        }
    }
}

/// Validates and encodes an envelope for publishing.
pub(crate) fn encode(envelope: &Envelope) -> Result<Vec<u8>, MessageError> {
    envelope.body.validate()?;
    let bytes = postcard::to_allocvec(envelope).map_err(|e| MessageError::Decode(e.to_string()))?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge { len: bytes.len() });
    }
    Ok(bytes)
}

/// Decodes and validates bytes received from the network. Checks the size before decoding and
/// refuses trailing bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<Envelope, MessageError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(MessageError::TooLarge { len: bytes.len() });
    }
    let (envelope, rest): (Envelope, _) =
        postcard::take_from_bytes(bytes).map_err(|e| MessageError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MessageError::Decode(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    envelope.body.validate()?;
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load() -> Load {
        Load {
            cpus_total: 8.0,
            cpus_free: 2.5,
            resources: vec![("GPU".into(), 2.0, 1.0)],
            queue_len: 3,
            store_used: 1 << 20,
            store_total: 1 << 30,
            gpu_memory: 80 << 30,
        }
    }

    #[test]
    fn round_trip() {
        let env = Envelope {
            seq: 7,
            body: Body::Load(load()),
        };
        assert_eq!(decode(&encode(&env).unwrap()).unwrap(), env);
        let objects = (0..MAX_OBJECTS_PER_MESSAGE)
            .map(|i| ([i as u8; 20], u64::MAX))
            .collect();
        let env = Envelope {
            seq: u64::MAX,
            body: Body::Objects(ObjectAnnouncements { objects }),
        };
        let bytes = encode(&env).unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES);
        assert_eq!(decode(&bytes).unwrap(), env);
    }

    #[test]
    fn invalid_loads_are_refused_on_both_sides() {
        let mut cases = Vec::new();
        let mut l = load();
        l.cpus_free = 9.0;
        cases.push(l);
        let mut l = load();
        l.cpus_total = f64::NAN;
        cases.push(l);
        let mut l = load();
        l.resources[0].2 = -1.0;
        cases.push(l);
        let mut l = load();
        l.resources[0].0 = "x".repeat(MAX_RESOURCE_NAME + 1);
        cases.push(l);
        let mut l = load();
        l.resources = (0..=MAX_RESOURCES)
            .map(|i| (format!("r{i}"), 1.0, 1.0))
            .collect();
        cases.push(l);
        for bad in cases {
            let env = Envelope {
                seq: 1,
                body: Body::Load(bad),
            };
            assert!(encode(&env).is_err());
            let raw = postcard::to_allocvec(&env).unwrap();
            assert!(decode(&raw).is_err());
        }
    }

    #[test]
    fn garbage_oversized_and_trailing_bytes_are_refused() {
        assert!(matches!(decode(&[]), Err(MessageError::Decode(_))));
        assert!(matches!(decode(&[0xff; 64]), Err(MessageError::Decode(_))));
        assert!(matches!(
            decode(&vec![0u8; MAX_MESSAGE_BYTES + 1]),
            Err(MessageError::TooLarge { .. })
        ));
        // A length prefix claiming far more objects than the bytes hold must not allocate it.
        let mut huge_len = postcard::to_allocvec(&(1u64, 1u32)).unwrap();
        huge_len.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert!(decode(&huge_len).is_err());
        let mut trailing = encode(&Envelope {
            seq: 1,
            body: Body::Load(load()),
        })
        .unwrap();
        trailing.push(0);
        assert!(matches!(decode(&trailing), Err(MessageError::Decode(_))));
        let too_many = (0..=MAX_OBJECTS_PER_MESSAGE)
            .map(|i| ([i as u8; 20], 1))
            .collect();
        let env = Envelope {
            seq: 1,
            body: Body::Objects(ObjectAnnouncements { objects: too_many }),
        };
        assert!(matches!(
            decode(&postcard::to_allocvec(&env).unwrap()),
            Err(MessageError::TooManyObjects(_))
        ));
    }
}
