//! What the node does with each message from a local client, and which
//! client may send what (a broken rule drops the connection, never the node).

use std::time::Duration;

use crate::cluster::GatherTarget;
use crate::command::Command;
use crate::core::Core;
use crate::error::ProtocolError;
use crate::ids::ConnId;
use crate::local::objects::Holder;
use crate::local::waits::{Awaited, Target};
use crate::wire::local::{ClientMsg, NodeMsg, Query, Role};

impl Core {
    /// Handle one message from connection `conn`.
    pub(crate) fn handle_client(&mut self, conn: ConnId, msg: ClientMsg) {
        if let Err(why) = self.client_msg(conn, msg) {
            self.stats.bad_frames += 1;
            self.emit(Command::Disconnect { conn, why });
        }
    }

    fn client_msg(&mut self, conn: ConnId, msg: ClientMsg) -> Result<(), ProtocolError> {
        let role = self.conns.role(conn);
        let holder = Holder::Conn(conn);
        match (role, msg) {
            (None, ClientMsg::Hello { role, pid }) => self.hello(conn, role, pid)?,
            (None, other) => return Err(ProtocolError::NoHello(other.name())),
            (Some(_), ClientMsg::Hello { .. }) => return Err(ProtocolError::SecondHello),
            (Some(Role::Control), m)
                if !matches!(m, ClientMsg::Query { .. } | ClientMsg::Shutdown) =>
            {
                return Err(ProtocolError::NotForControl(m.name()));
            }
            (Some(_), ClientMsg::Shutdown) => {
                if self.config.daemon && role == Some(Role::Control) {
                    self.emit(Command::Stop);
                } else {
                    return Err(ProtocolError::NotAllowedToStop);
                }
            }
            (Some(_), ClientMsg::RegisterFunction { id, blob }) => {
                self.tasks.register_function(id, blob);
            }
            (Some(_), ClientMsg::Submit(spec)) => {
                if let Err(e) = self.submit(*spec, holder) {
                    tracing::warn!("rejected a task: {e}");
                }
            }
            (Some(_), ClientMsg::CreateActor { req, spec }) => {
                let result = self
                    .submit(*spec, holder)
                    .map(|()| String::new())
                    .map_err(|e| e.to_string());
                self.send_to(conn, NodeMsg::Reply { req, result });
            }
            (
                Some(_),
                ClientMsg::Get {
                    req,
                    ids,
                    timeout_ms,
                },
            ) => {
                let n = ids.len();
                let blocked = self.task_worker_of(conn);
                let deadline = self.deadline(timeout_ms);
                let target = Target::Conn { conn, req };
                self.begin_wait(ids, n, Awaited::Values, target, blocked, deadline);
            }
            (
                Some(_),
                ClientMsg::Wait {
                    req,
                    ids,
                    num_returns,
                    timeout_ms,
                    fetch_local,
                },
            ) => {
                let need = (num_returns as usize).min(ids.len());
                let blocked = self.task_worker_of(conn);
                let deadline = self.deadline(timeout_ms);
                self.begin_wait(
                    ids,
                    need,
                    Awaited::of_wait(fetch_local),
                    Target::Conn { conn, req },
                    blocked,
                    deadline,
                );
            }
            (Some(_), ClientMsg::Create { req, id, len }) => {
                self.create_for_client(conn, req, id, len);
            }
            (Some(_), ClientMsg::Seal { id, contained }) => {
                self.seal_object(holder, id, contained);
                self.note_put(self.conns.pid(conn), &id);
            }
            (
                Some(_),
                ClientMsg::PutInline {
                    id,
                    blob,
                    contained,
                },
            ) => {
                self.put_inline(id, blob, contained);
                self.note_put(self.conns.pid(conn), &id);
            }
            (Some(_), ClientMsg::Release { ids }) => self.release_pins(holder, &ids),
            (Some(_), ClientMsg::AddRefs { ids }) => self.add_refs(holder, &ids),
            (Some(_), ClientMsg::DecRefs { ids }) => self.dec_refs(holder, &ids),
            (Some(_), ClientMsg::Escaped { ids }) => self.mark_escaped(&ids),
            (
                Some(Role::Worker(wid)),
                ClientMsg::TaskDone {
                    task,
                    outcome,
                    run_us,
                    contained,
                },
            ) => {
                self.record_run_time(task, run_us);
                let ok = matches!(outcome, crate::wire::local::Outcome::Returns(_));
                self.note_run(wid, task, run_us, ok);
                self.task_done(wid, task, outcome, contained);
            }
            (Some(_), ClientMsg::TaskDone { .. }) => return Err(ProtocolError::NotAWorkerOutcome),
            (Some(Role::Worker(wid)), ClientMsg::Output { task, stream, data }) => {
                self.note_output(wid, &data);
                self.forward_output(task, stream, data);
            }
            (Some(_), ClientMsg::Output { .. }) => return Err(ProtocolError::NotAWorkerOutput),
            (Some(Role::Worker(wid)), ClientMsg::ActorExit { reason }) => {
                if !self.actor_exits(wid, reason) {
                    return Err(ProtocolError::NotAnActorWorker);
                }
            }
            (Some(_), ClientMsg::ActorExit { .. }) => return Err(ProtocolError::NotAnActorWorker),
            (Some(Role::Worker(wid)), ClientMsg::Retire) => {
                if !self.worker_retires(wid) {
                    return Err(ProtocolError::NotATaskWorker);
                }
            }
            (Some(_), ClientMsg::Retire) => return Err(ProtocolError::NotATaskWorker),
            (
                Some(_),
                ClientMsg::Cancel {
                    id,
                    force,
                    recursive,
                },
            ) => self.cancel(id, force, recursive),
            (Some(_), ClientMsg::KillActor { actor, no_restart }) => {
                self.kill_actor(actor, no_restart);
            }
            (Some(_), ClientMsg::GetActor { req, name }) => {
                self.lookup_actor(&name, crate::cluster::LookupTarget::Conn { conn, req });
            }
            (Some(_), ClientMsg::Query { req, query }) => {
                if let Query::Cluster(what) = query {
                    self.gather(what, GatherTarget::Conn { conn, req });
                } else {
                    let result = Ok(self.query(query).to_string());
                    self.send_to(conn, NodeMsg::Reply { req, result });
                }
            }
        }
        Ok(())
    }

    /// When a client's timeout ends, counted from now.
    fn deadline(&self, timeout_ms: Option<u64>) -> Option<std::time::Instant> {
        timeout_ms.map(|ms| self.now + Duration::from_millis(ms))
    }
}
