//! A readable trace of a run: one line per thing that happened, kept while
//! tracing is on (a failing seed is run again with it, and its last lines
//! printed).

use std::collections::VecDeque;
use std::fmt::Write;
use std::time::Duration;

use peer_node_core::ids::{ObjectId, TaskId};
use peer_node_core::wire::local::{ClientMsg, NodeMsg, Value};
use peer_node_core::wire::peer::{PeerMsg, WireValue};

/// The last lines of a run.
#[derive(Debug, Default)]
pub struct Trace {
    lines: VecDeque<String>,
    limit: usize,
}

impl Trace {
    pub fn new(limit: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            limit,
        }
    }

    pub fn push(&mut self, now: Duration, node: Option<usize>, what: String) {
        let mut line = String::with_capacity(64);
        let _ = write!(line, "{:>9.4}s ", now.as_secs_f64());
        match node {
            Some(n) => {
                let _ = write!(line, "n{n:<2} ");
            }
            None => line.push_str("    "),
        }
        line.push_str(&what);
        if self.lines.len() == self.limit {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    pub fn lines(&self) -> impl Iterator<Item = &String> {
        self.lines.iter()
    }
}

/// A short name for an object (its task's last bytes and its index).
pub fn obj(id: &ObjectId) -> String {
    let t = id.task();
    format!(
        "{}#{}",
        task(&t),
        u32::from_le_bytes([id.0[16], id.0[17], id.0[18], id.0[19]])
    )
}

/// A short name for a task.
pub fn task(id: &TaskId) -> String {
    format!("{:02x}{:02x}{:02x}", id.0[13], id.0[14], id.0[15])
}

fn value(v: &Value) -> String {
    match v {
        Value::Inline(b) => format!("inline({}B)", b.len()),
        Value::Stored { len, .. } => format!("stored({len}B)"),
        Value::Error(e) => format!("error({:?})", e.kind),
    }
}

fn wire(v: &WireValue) -> String {
    match v {
        WireValue::Blob(b) => format!("blob({}B)", b.len()),
        WireValue::At { len, holders, .. } => format!("at({len}B, {} holders)", holders.len()),
        WireValue::Error(e) => format!("error({:?})", e.kind),
    }
}

fn ids(ids: &[ObjectId]) -> String {
    ids.iter().map(obj).collect::<Vec<_>>().join(",")
}

/// A client message in a few words.
pub fn client_msg(m: &ClientMsg) -> String {
    match m {
        ClientMsg::Submit(s) => format!(
            "Submit {} {} deps [{}]",
            s.name,
            task(&s.task),
            ids(&s.deps)
        ),
        ClientMsg::CreateActor { spec, .. } => format!("CreateActor {}", task(&spec.task)),
        ClientMsg::Get { ids: i, .. } => format!("Get [{}]", ids(i)),
        ClientMsg::TaskDone {
            task: t, outcome, ..
        } => format!("TaskDone {} {outcome:?}", task(t))
            .chars()
            .take(120)
            .collect(),
        ClientMsg::AddRefs { ids: i } => format!("AddRefs [{}]", ids(i)),
        ClientMsg::DecRefs { ids: i } => format!("DecRefs [{}]", ids(i)),
        ClientMsg::Release { ids: i } => format!("Release [{}]", ids(i)),
        ClientMsg::Create { id, len, .. } => format!("Create {} {len}B", obj(id)),
        ClientMsg::Seal { id, .. } => format!("Seal {}", obj(id)),
        ClientMsg::PutInline { id, .. } => format!("PutInline {}", obj(id)),
        ClientMsg::Cancel { id, .. } => format!("Cancel {}", obj(id)),
        m => m.name().to_string(),
    }
}

/// A node message in a few words.
pub fn node_msg(m: &NodeMsg) -> String {
    match m {
        NodeMsg::Execute(e) => format!("Execute {} {}", e.name, task(&e.task)),
        NodeMsg::Values { values, .. } => match values {
            Some(v) => format!(
                "Values [{}]",
                v.iter().map(value).collect::<Vec<_>>().join(",")
            ),
            None => "Values timed out".into(),
        },
        NodeMsg::Created { result, .. } => format!("Created {result:?}"),
        NodeMsg::Revoke { tasks } => format!("Revoke {} tasks", tasks.len()),
        other => format!("{other:?}").chars().take(60).collect(),
    }
}

/// A peer message in a few words.
pub fn peer_msg(m: &PeerMsg) -> String {
    match m {
        PeerMsg::Task {
            spec,
            deps,
            hops,
            lend,
            ..
        } => format!(
            "Task {} {} hops {hops} deps [{}] lend {lend}",
            spec.name,
            task(&spec.task),
            deps.iter().map(wire).collect::<Vec<_>>().join(",")
        ),
        PeerMsg::Objects {
            values,
            contains,
            lend,
        } => format!(
            "Objects [{}] lend {lend}{}",
            values
                .iter()
                .map(|(id, v)| format!("{}={}", obj(id), wire(v)))
                .collect::<Vec<_>>()
                .join(","),
            contains
                .iter()
                .map(|(id, c)| format!(" {} holds [{}]", obj(id), ids(c)))
                .collect::<String>()
        ),
        PeerMsg::Release { ids: i, seen } => format!("Release [{}] seen {seen}", ids(i)),
        PeerMsg::AskBorrows { ids: i, upto } => format!("AskBorrows [{}] upto {upto}", ids(i)),
        PeerMsg::Borrowing { ids: i } => format!("Borrowing [{}]", ids(i)),
        PeerMsg::Fetch { id, failed } => format!("Fetch {} ({} failed)", obj(id), failed.len()),
        PeerMsg::Which { tasks } => format!("Which {} tasks", tasks.len()),
        PeerMsg::Have { tasks } => format!("Have {} tasks", tasks.len()),
        PeerMsg::Located { id } => format!("Located {}", obj(id)),
        PeerMsg::Free { ids: i } => format!("Free [{}]", ids(i)),
        PeerMsg::Cancel { task: t, .. } => format!("Cancel {}", task(t)),
        PeerMsg::Moved { task: t, .. } => format!("Moved {}", task(t)),
        m => m.name().to_string(),
    }
}
