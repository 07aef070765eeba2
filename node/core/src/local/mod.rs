//! This node's own work: its local connections and what they send, the
//! object table and values, gets and waits, tasks and their scheduling onto
//! workers, the worker pool, and actors.
//!
//! - `client`: each message of a local client (workers, attached drivers, the CLI);
//! - `driver`: the same operations for the driver embedded in this process;
//! - `conns`: who each connection is and what it holds;
//! - `objects`: the object table, handle counts, freeing;
//! - `values`: objects getting values, reading them, store space;
//! - `waits`: gets and waits and their deadlines;
//! - `tasks`: the task table, submission, completion, retries, cancel;
//! - `scheduler`: which ready task runs on which worker;
//! - `infeasible`: telling drivers of tasks no node could ever run;
//! - `workers`: the worker pool;
//! - `gpus`: which GPU device ids running work holds;
//! - `actors`: actors created or hosted here.

pub(crate) mod actors;
mod client;
pub(crate) mod conns;
mod driver;
pub(crate) mod gpus;
pub(crate) mod infeasible;
pub(crate) mod objects;
mod scheduler;
pub(crate) mod tasks;
pub(crate) mod values;
pub(crate) mod waits;
pub(crate) mod workers;
