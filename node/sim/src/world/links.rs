//! The simulated network's part of the world: sending a peer message over
//! the sender's stream (queued while it opens), opening streams with their
//! incarnation exchange and link reset, giving a peer up after
//! [`OPEN_TIMEOUT`], and streams breaking.

use std::time::Duration;

use peer_node_core::Event;
use peer_node_core::ids::PeerId;
use peer_node_core::wire::peer::PeerMsg;
use rand::Rng;

use super::{Ev, Failure, World};
use crate::net::OPEN_TIMEOUT;

impl World {
    pub(super) fn send_peer(&mut self, from: usize, to_peer: PeerId, msg: PeerMsg) {
        let Some(&to) = self.peers.get(&to_peer) else {
            return;
        };
        if to == from {
            let inc = self.nodes[from].incarnation;
            let peer = self.nodes[from].peer;
            self.at(
                Duration::from_micros(20),
                Ev::Core {
                    node: from,
                    inc,
                    event: Event::Peer { from: peer, msg },
                },
            );
            return;
        }
        let up = !self.net.is_cut(from, to) && self.alive(to);
        let link = self.net.link(from, to);
        if link.open && up {
            self.put_on_wire(from, to, msg);
            return;
        }
        let link = self.net.link(from, to);
        link.queued.push(msg);
        if link.opening_since.is_none() && !link.open {
            link.opening_since = Some(self.now);
            let writer = link.writer;
            self.at(
                Duration::from_millis(1),
                Ev::OpenAttempt { from, to, writer },
            );
        }
    }

    fn put_on_wire(&mut self, from: usize, to: usize, msg: PeerMsg) {
        let d = if self.rng.random_bool(0.05) {
            self.micros(5_000, 80_000)
        } else {
            self.micros(50, 3_000)
        };
        let to_inc = self.nodes[to].incarnation;
        let now = self.now;
        let link = self.net.link(from, to);
        let at = (now + d).max(link.last_at);
        link.last_at = at;
        link.last_sent = Some(msg.clone());
        let epoch = link.epoch;
        self.at_time(
            at,
            Ev::Deliver {
                from,
                to,
                epoch,
                to_inc,
                msg,
            },
        );
    }

    pub(super) fn open_attempt(
        &mut self,
        from: usize,
        to: usize,
        writer: u64,
    ) -> Result<(), Failure> {
        if !self.alive(from) {
            return Ok(());
        }
        let up = !self.net.is_cut(from, to) && self.alive(to);
        let now = self.now;
        let link = self.net.link(from, to);
        if writer != link.writer || link.open {
            return Ok(());
        }
        if up {
            link.epoch += 1;
            link.open = true;
            link.last_at = now;
            link.opening_since = None;
            let reset = link.had_stream;
            link.had_stream = true;
            let queued = std::mem::take(&mut link.queued);
            self.note(Some(from), || {
                format!(
                    "stream to n{to} opens ({} queued, reset {reset})",
                    queued.len()
                )
            });
            for m in queued {
                self.put_on_wire(from, to, m);
            }
            let (pf, pt) = (self.nodes[from].peer, self.nodes[to].peer);
            let (inc_f, inc_t) = (self.nodes[from].incarnation, self.nodes[to].incarnation);
            self.core_event(
                from,
                Event::Incarnation {
                    peer: pt,
                    incarnation: inc_t,
                },
            )?;
            if reset {
                self.core_event(from, Event::LinkReset { peer: pt })?;
            }
            return self.core_event(
                to,
                Event::Incarnation {
                    peer: pf,
                    incarnation: inc_f,
                },
            );
        }
        let since = link.opening_since.unwrap_or(now);
        if now.saturating_sub(since) >= OPEN_TIMEOUT {
            link.queued.clear();
            link.writer += 1;
            link.had_stream = false;
            link.opening_since = None;
            self.note(Some(from), || format!("gives up opening a stream to n{to}"));
            // It takes the peer for gone, actors and all.
            self.disturb_actors_on(to);
            self.disturb_actors_on(from);
            let peer = self.nodes[to].peer;
            return self.core_event(
                from,
                Event::PeerGone {
                    peer,
                    why: "its link broke".into(),
                },
            );
        }
        self.at(
            Duration::from_millis(200),
            Ev::OpenAttempt { from, to, writer },
        );
        Ok(())
    }

    /// The streams between `a` and `b` break (a cut, or one of them died).
    pub(super) fn break_streams(&mut self, a: usize, b: usize) {
        for (x, y) in [(a, b), (b, a)] {
            let dup = self.rng.random_bool(0.3);
            let x_alive = self.alive(x);
            let now = self.now;
            let link = self.net.link(x, y);
            if link.open {
                link.open = false;
                link.broken.insert(link.epoch);
                if dup && let Some(m) = link.last_sent.take() {
                    // Written again on the next stream: maybe delivered twice.
                    link.queued.insert(0, m);
                }
            }
            if x_alive && link.opening_since.is_none() {
                link.opening_since = Some(now);
                let writer = link.writer;
                self.at(
                    Duration::from_millis(5),
                    Ev::OpenAttempt {
                        from: x,
                        to: y,
                        writer,
                    },
                );
            }
        }
    }
}
