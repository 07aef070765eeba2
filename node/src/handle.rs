//! What the node does with each message from a local client.

use std::time::{Duration, Instant};

use crate::cluster_state::LookupTarget;
use crate::protocol::{ClientMsg, NodeMsg, Role};
use crate::state::{ConnId, Holder, State, Target};

/// What the connection loop should do after a message.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Close this connection (protocol violation).
    Close(String),
    /// Stop the whole node (`peer down`).
    Shutdown,
}

impl State {
    /// Handle one message from connection `conn`.
    pub fn handle(&mut self, conn: ConnId, msg: ClientMsg) -> After {
        let role = self.conns.get(&conn).and_then(|c| c.role);
        let holder = Holder::Conn(conn);
        match (role, msg) {
            (None, ClientMsg::Hello { role, pid }) => match self.hello(conn, role, pid) {
                Ok(()) => After::Continue,
                Err(e) => After::Close(e),
            },
            (None, other) => After::Close(format!(
                "expected Hello as the first message, got {}",
                msg_name(&other)
            )),
            (Some(_), ClientMsg::Hello { .. }) => After::Close("second Hello".into()),
            (Some(Role::Control), m)
                if !matches!(m, ClientMsg::Query { .. } | ClientMsg::Shutdown) =>
            {
                After::Close(format!("control clients may not send {}", msg_name(&m)))
            }
            (Some(_), ClientMsg::Shutdown) => {
                if self.config.daemon && role == Some(Role::Control) {
                    After::Shutdown
                } else {
                    After::Close("only `peer down` may stop a node".into())
                }
            }
            (Some(_), ClientMsg::RegisterFunction { id, blob }) => {
                self.functions
                    .entry(id)
                    .or_insert_with(|| std::sync::Arc::new(blob));
                After::Continue
            }
            (Some(_), ClientMsg::Submit(spec)) => {
                if let Err(e) = self.submit(*spec, holder) {
                    tracing::warn!("rejected a task: {e}");
                }
                After::Continue
            }
            (Some(_), ClientMsg::CreateActor { req, spec }) => {
                let result = self.submit(*spec, holder).map(|()| String::new());
                self.send_to(conn, &NodeMsg::Reply { req, result });
                After::Continue
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
                self.begin_wait(
                    ids,
                    n,
                    true,
                    Target::Remote { conn, req },
                    blocked,
                    deadline(timeout_ms),
                );
                After::Continue
            }
            (
                Some(_),
                ClientMsg::Wait {
                    req,
                    ids,
                    num_returns,
                    timeout_ms,
                },
            ) => {
                let need = (num_returns as usize).min(ids.len());
                let blocked = self.task_worker_of(conn);
                self.begin_wait(
                    ids,
                    need,
                    false,
                    Target::Remote { conn, req },
                    blocked,
                    deadline(timeout_ms),
                );
                After::Continue
            }
            (Some(_), ClientMsg::Create { req, id, len }) => {
                self.create_for_client(conn, req, id, len);
                After::Continue
            }
            (Some(_), ClientMsg::Seal { id, contained }) => {
                self.seal_object(holder, id, contained);
                After::Continue
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
                After::Continue
            }
            (Some(_), ClientMsg::Release { ids }) => {
                self.release_pins(holder, &ids);
                After::Continue
            }
            (Some(_), ClientMsg::AddRefs { ids }) => {
                self.add_refs(holder, &ids);
                After::Continue
            }
            (Some(_), ClientMsg::DecRefs { ids }) => {
                self.dec_refs(holder, &ids);
                After::Continue
            }
            (Some(_), ClientMsg::Escaped { ids }) => {
                self.mark_escaped(&ids);
                After::Continue
            }
            (
                Some(Role::Worker(wid)),
                ClientMsg::TaskDone {
                    task,
                    outcome,
                    run_us,
                    contained,
                },
            ) => {
                self.record_run_time(wid, task, run_us);
                self.task_done(wid, task, outcome, contained);
                After::Continue
            }
            (Some(_), ClientMsg::TaskDone { .. }) => {
                After::Close("only workers report task outcomes".into())
            }
            (Some(Role::Worker(_)), ClientMsg::Output { task, stream, data }) => {
                self.forward_output(task, stream, data);
                After::Continue
            }
            (Some(_), ClientMsg::Output { .. }) => {
                After::Close("only workers send task output".into())
            }
            (Some(_), ClientMsg::Cancel { id, force }) => {
                self.cancel(id, force);
                After::Continue
            }
            (Some(_), ClientMsg::KillActor { actor, no_restart }) => {
                self.kill_actor(actor, no_restart);
                After::Continue
            }
            (Some(_), ClientMsg::GetActor { req, name }) => {
                self.lookup_actor(&name, LookupTarget::Conn { conn, req });
                After::Continue
            }
            (Some(_), ClientMsg::Query { req, query }) => {
                let result = Ok(self.query(query).to_string());
                self.send_to(conn, &NodeMsg::Reply { req, result });
                After::Continue
            }
        }
    }
}

fn deadline(timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

fn msg_name(m: &ClientMsg) -> &'static str {
    match m {
        ClientMsg::Hello { .. } => "Hello",
        ClientMsg::RegisterFunction { .. } => "RegisterFunction",
        ClientMsg::Submit(_) => "Submit",
        ClientMsg::CreateActor { .. } => "CreateActor",
        ClientMsg::Get { .. } => "Get",
        ClientMsg::Wait { .. } => "Wait",
        ClientMsg::Create { .. } => "Create",
        ClientMsg::Seal { .. } => "Seal",
        ClientMsg::PutInline { .. } => "PutInline",
        ClientMsg::Release { .. } => "Release",
        ClientMsg::AddRefs { .. } => "AddRefs",
        ClientMsg::DecRefs { .. } => "DecRefs",
        ClientMsg::Escaped { .. } => "Escaped",
        ClientMsg::TaskDone { .. } => "TaskDone",
        ClientMsg::Cancel { .. } => "Cancel",
        ClientMsg::Output { .. } => "Output",
        ClientMsg::KillActor { .. } => "KillActor",
        ClientMsg::GetActor { .. } => "GetActor",
        ClientMsg::Query { .. } => "Query",
        ClientMsg::Shutdown => "Shutdown",
    }
}
