//! Faults drawn from the seed and injected: link cuts (a long one may make
//! both ends see the other gone), node kills with or without a restart, and
//! worker crashes; everything heals by the end of the fault window.

use std::time::Duration;

use peer_node_core::Event;
use peer_node_core::ids::ConnId;
use rand::Rng;
use rand::rngs::SmallRng;

use super::{Ev, Failure, Proc, World};

/// A fault to inject.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    Cut(usize, usize, Duration),
    Heal(usize, usize),
    HealAll,
    Kill(usize, Option<Duration>),
    Restart(usize),
    KillWorker(usize),
    /// Both ends of a cut pair see the other as gone (its connection closed).
    FalseGone(usize, usize),
}

impl World {
    pub(super) fn draw_faults(&mut self) {
        let n = self.nodes.len();
        let window = |rng: &mut SmallRng| Duration::from_millis(rng.random_range(300..14_000));
        for _ in 0..self.rng.random_range(0..4) {
            let a = self.rng.random_range(0..n);
            let b = (a + self.rng.random_range(1..n)) % n;
            let at = window(&mut self.rng);
            let len = Duration::from_millis(self.rng.random_range(50..14_000));
            self.at_time(at, Ev::Fault(Fault::Cut(a, b, len)));
        }
        // Node 0 hosts the driver (the user's own machine): it stays up.
        let mut victims: Vec<usize> = (1..n).collect();
        let mut gone_for_good: Vec<usize> = Vec::new();
        for _ in 0..self.rng.random_range(0..3).min(victims.len()) {
            let v = victims.swap_remove(self.rng.random_range(0..victims.len()));
            let at = window(&mut self.rng);
            // The last node with a custom resource comes back (else tasks that
            // need it wait for one forever, as Ray's do); others may not.
            let has = |i: usize| !self.nodes[i].spec.resources.is_empty();
            let last = has(v) && !(0..n).any(|i| i != v && has(i) && !gone_for_good.contains(&i));
            let back = (last || self.rng.random_bool(0.7))
                .then(|| Duration::from_millis(self.rng.random_range(300..8_000)));
            if back.is_none() {
                gone_for_good.push(v);
            }
            self.at_time(at, Ev::Fault(Fault::Kill(v, back)));
        }
        for _ in 0..self.rng.random_range(0..5) {
            let v = self.rng.random_range(0..n);
            let at = window(&mut self.rng);
            self.at_time(at, Ev::Fault(Fault::KillWorker(v)));
        }
        self.faults_end = Duration::from_secs(30);
        self.at_time(self.faults_end, Ev::Fault(Fault::HealAll));
    }

    pub(super) fn fault(&mut self, f: Fault) -> Result<(), Failure> {
        self.note(None, || format!("fault: {f:?}"));
        match f {
            Fault::Cut(a, b, len) => {
                self.faults.push(format!("cut n{a}-n{b} for {len:?}"));
                self.net.cut(a, b);
                self.break_streams(a, b);
                self.at(len, Ev::Fault(Fault::Heal(a, b)));
                if self.rng.random_bool(0.3) {
                    let d = Duration::from_millis(self.rng.random_range(500..6_000));
                    self.at(d, Ev::Fault(Fault::FalseGone(a, b)));
                }
            }
            Fault::Heal(a, b) => self.net.heal(a, b),
            Fault::HealAll => self.net.heal_all(),
            Fault::FalseGone(a, b) => {
                if self.net.is_cut(a, b) && self.alive(a) && self.alive(b) {
                    self.faults
                        .push(format!("n{a} and n{b} see each other gone"));
                    self.disturb_actors_on(a);
                    self.disturb_actors_on(b);
                    let (pa, pb) = (self.nodes[a].peer, self.nodes[b].peer);
                    let why = "it stopped answering pings".to_string();
                    self.core_event(
                        a,
                        Event::PeerGone {
                            peer: pb,
                            why: why.clone(),
                        },
                    )?;
                    self.core_event(b, Event::PeerGone { peer: pa, why })?;
                }
            }
            Fault::Kill(v, back) => {
                if !self.alive(v) {
                    return Ok(());
                }
                self.faults.push(format!("kill n{v} (back after {back:?})"));
                self.disturb_actors_on(v);
                self.nodes[v].core = None;
                self.nodes[v].procs.clear();
                self.nodes[v].pulls.clear();
                for x in 0..self.nodes.len() {
                    if x != v {
                        self.break_streams(v, x);
                    }
                }
                let peer = self.nodes[v].peer;
                for x in 0..self.nodes.len() {
                    if x != v && self.alive(x) {
                        let d = self.micros(10_000, 500_000);
                        let inc = self.nodes[x].incarnation;
                        self.at(
                            d,
                            Ev::Core {
                                node: x,
                                inc,
                                event: Event::PeerGone {
                                    peer,
                                    why: "its connection closed".into(),
                                },
                            },
                        );
                    }
                }
                if let Some(d) = back {
                    self.at(d, Ev::Fault(Fault::Restart(v)));
                }
            }
            Fault::Restart(v) => {
                if !self.alive(v) {
                    self.faults.push(format!("restart n{v}"));
                    self.start_node(v);
                }
            }
            Fault::KillWorker(v) => {
                let workers: Vec<ConnId> = {
                    let mut w: Vec<ConnId> = self.nodes[v]
                        .procs
                        .iter()
                        .filter(|(_, p)| matches!(p, Proc::Worker(_)))
                        .map(|(c, _)| *c)
                        .collect();
                    w.sort();
                    w
                };
                if !workers.is_empty() {
                    let conn = workers[self.rng.random_range(0..workers.len())];
                    self.faults.push(format!("kill a worker of n{v}"));
                    self.disturb_actor_of(v, conn);
                    self.process_gone(v, conn);
                }
            }
        }
        Ok(())
    }
}
