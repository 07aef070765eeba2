//! Pulls, as the shell's `run_pull` does them: chunk by chunk from the
//! holders (asked through their cores' `pull_source`, which a holder still
//! pulling answers with the chunks it has), into the puller's store; a
//! holder that is gone or cut off strikes out, one that says it has nothing
//! is dropped.

use std::time::Duration;

use peer_node_core::ids::{ObjectId, PeerId};
use peer_node_core::store::ObjectStore;
use peer_node_core::wire::peer::PullRequest;
use peer_node_core::{CHUNK, Event, PullFailure, PullSource};
use rustc_hash::FxHashMap;

use super::{Ev, Failure, World};
use crate::trace;

/// A pull in progress (the shell's `run_pull`, simulated).
#[derive(Debug)]
pub(super) struct Pull {
    pub(super) id: ObjectId,
    pub(super) offset: u64,
    pub(super) len: u64,
    pub(super) sources: Vec<usize>,
    pub(super) strikes: FxHashMap<usize, u32>,
    pub(super) bad: Vec<PeerId>,
    pub(super) failures: Vec<String>,
    pub(super) next: usize,
    /// When the current chunk was first asked for (a holder still pulling
    /// may take a while to have it).
    pub(super) asked_at: Duration,
}

impl World {
    /// The bytes `req` asks of node `src`'s copy of an object of `object_len` bytes at `at`.
    fn read_served(
        &self,
        src: usize,
        req: &PullRequest,
        at: u64,
        object_len: u64,
    ) -> Result<Vec<u8>, String> {
        if req.offset + req.len > object_len {
            return Err(format!("object has only {object_len} bytes"));
        }
        self.nodes[src]
            .store
            .read(at + req.offset, req.len)
            .map_err(|e| e.to_string())
    }

    pub(super) fn pull_step(&mut self, n: usize, pull: u64) -> Result<(), Failure> {
        let Some(p) = self.nodes[n].pulls.get(&pull) else {
            return Ok(());
        };
        let (id, offset, len, next) = (p.id, p.offset, p.len, p.next);
        let chunks = len.div_ceil(CHUNK) as usize;
        if next >= chunks {
            self.nodes[n].pulls.remove(&pull);
            self.note(Some(n), || format!("pull of {} done", trace::obj(&id)));
            return self.core_event(n, Event::PullDone { id, result: Ok(()) });
        }
        let sources = p.sources.clone();
        if sources.is_empty() {
            let Some(p) = self.nodes[n].pulls.remove(&pull) else {
                return Ok(());
            };
            let why = if p.failures.is_empty() {
                "no source left".to_string()
            } else {
                p.failures.join("; ")
            };
            self.note(Some(n), || {
                format!("pull of {} failed: {why}", trace::obj(&id))
            });
            let failure = PullFailure { why, bad: p.bad };
            return self.core_event(
                n,
                Event::PullDone {
                    id,
                    result: Err(failure),
                },
            );
        }
        let src = sources[next % sources.len()];
        let inc = self.nodes[n].incarnation;
        let chunk_offset = next as u64 * CHUNK;
        let req = PullRequest {
            id,
            offset: chunk_offset,
            len: CHUNK.min(len - chunk_offset),
        };
        if src == n || !self.alive(src) || self.net.is_cut(n, src) {
            // The stream fails: three strikes and the source is dropped.
            let strikes = self.nodes[n]
                .pulls
                .get_mut(&pull)
                .map(|p| {
                    let s = p.strikes.entry(src).or_insert(0);
                    *s += 1;
                    *s
                })
                .unwrap_or(0);
            if strikes >= 3 {
                let peer = self.nodes[src].peer;
                if let Some(p) = self.nodes[n].pulls.get_mut(&pull) {
                    p.sources.retain(|s| *s != src);
                    p.bad.push(peer);
                    p.failures.push(format!("n{src}: transport"));
                }
            }
            let d = self.micros(10_000, 200_000);
            self.at(d, Ev::PullStep { node: n, inc, pull });
            return Ok(());
        }
        let source = match self.core_mut(src) {
            Some(core) => core.pull_source(&req),
            None => PullSource::Missing("dead".into()),
        };
        let bytes = match source {
            PullSource::Stored {
                offset: at,
                len: object_len,
            } => {
                let bytes = self.read_served(src, &req, at, object_len);
                if let Some(core) = self.core_mut(src) {
                    core.driver_release(&[id]);
                }
                self.drain(src);
                if bytes.is_ok() {
                    self.core_event(src, Event::Served { bytes: req.len })?;
                }
                bytes
            }
            // Sent at once, so the bytes are read before the pull here can end.
            PullSource::Partial {
                offset: at,
                len: object_len,
            } => self.read_served(src, &req, at, object_len),
            PullSource::NotYet => {
                let asked = self.nodes[n]
                    .pulls
                    .get(&pull)
                    .map_or(self.now, |p| p.asked_at);
                if self.now.saturating_sub(asked) < Duration::from_secs(10) {
                    self.at(
                        Duration::from_millis(30),
                        Ev::PullStep { node: n, inc, pull },
                    );
                    return Ok(());
                }
                Err("chunk not pulled here yet".to_string())
            }
            PullSource::Missing(why) => Err(why),
        };
        match bytes {
            Ok(bytes) => {
                if let Err(e) = self.nodes[n].store.write(offset + chunk_offset, &bytes) {
                    self.nodes[n].pulls.remove(&pull);
                    let failure = PullFailure {
                        why: e.to_string(),
                        bad: Vec::new(),
                    };
                    return self.core_event(
                        n,
                        Event::PullDone {
                            id,
                            result: Err(failure),
                        },
                    );
                }
                if let Some(p) = self.nodes[n].pulls.get_mut(&pull) {
                    p.next += 1;
                    p.asked_at = self.now;
                    p.strikes.insert(src, 0);
                }
                self.core_event(n, Event::PullChunk { id, chunk: next })?;
                let d = Duration::from_micros(req.len / 2_000 + 200);
                self.at(d, Ev::PullStep { node: n, inc, pull });
            }
            Err(why) => {
                let peer = self.nodes[src].peer;
                if let Some(p) = self.nodes[n].pulls.get_mut(&pull) {
                    p.sources.retain(|s| *s != src);
                    p.bad.push(peer);
                    p.failures.push(format!("n{src}: {why}"));
                    p.asked_at = self.now;
                }
                self.at(
                    Duration::from_micros(300),
                    Ev::PullStep { node: n, inc, pull },
                );
            }
        }
        Ok(())
    }
}
