//! Errors of the core: why a submission is refused, and why a local
//! connection is dropped.

use crate::ids::{TaskId, WorkerId};

/// Why a task (or an actor creation) was not accepted. The submitter gets it;
/// nothing of the task stays behind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    #[error("task {0} was submitted twice")]
    Duplicate(TaskId),
    #[error(
        "task {task} asks for {amount} of resource {resource:?}; amounts must be between 0 and {max}"
    )]
    BadResource {
        task: String,
        resource: String,
        amount: f64,
        max: f64,
    },
    #[error("actor creation without actor options")]
    NoActorOptions,
    #[error("actor creation names two different actors")]
    ActorMismatch,
    #[error("an actor named {0:?} already exists")]
    NameTaken(String),
    #[error(
        "the runtime_env of task {task} is {len} bytes once normalised; at most {max} are allowed"
    )]
    RuntimeEnvTooLarge {
        task: String,
        len: usize,
        max: usize,
    },
}

/// Why a local connection is dropped: it broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("expected Hello as the first message, got {0}")]
    NoHello(&'static str),
    #[error("second Hello")]
    SecondHello,
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    #[error("worker {0} connected twice")]
    WorkerTwice(WorkerId),
    #[error("control clients may not send {0}")]
    NotForControl(&'static str),
    #[error("only `peer down` may stop a node")]
    NotAllowedToStop,
    #[error("only workers report task outcomes")]
    NotAWorkerOutcome,
    #[error("only workers send task output")]
    NotAWorkerOutput,
    #[error("only actor workers say their actor exits")]
    NotAnActorWorker,
    #[error("only task workers retire")]
    NotATaskWorker,
}
