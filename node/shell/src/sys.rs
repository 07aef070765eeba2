//! The few operating-system calls the node makes through libc (signals,
//! process checks, file modes); the only module of this crate with `unsafe`.

/// SIGKILL a process we started.
pub fn kill_process(pid: u32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid at worst
    // signals nothing or gets ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// The signal that tells a worker to look for a cancel of its running task
/// (its handler raises `KeyboardInterrupt` there when one came).
pub const INTERRUPT_SIGNAL: i32 = libc::SIGUSR1;

/// Send [`INTERRUPT_SIGNAL`] to a worker process we started.
pub fn interrupt_process(pid: u32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a stale pid at worst
    // signals nothing or gets ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, INTERRUPT_SIGNAL);
    }
}

/// Send [`INTERRUPT_SIGNAL`] to this process (a worker that read a cancel of
/// the task it runs).
pub fn interrupt_self() {
    // SAFETY: raise(3) has no memory-safety preconditions.
    unsafe {
        libc::raise(INTERRUPT_SIGNAL);
    }
}

/// Whether `fd` has bytes to read now (poll(2) without waiting).
pub fn readable_now(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `p` is one valid pollfd that outlives the call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & libc::POLLIN != 0
}

/// SIGTERM a process we started.
pub fn terminate_process(pid: u32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: as in `kill_process`.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

/// Whether a process with this pid exists (and is not a zombie we could reap).
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // state is the field after the parenthesised command name
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X")
        }
        Err(_) => false,
    }
}

/// The effective user id.
pub fn uid() -> u32 {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// Reap a child process that was killed (blocking until it is gone).
pub fn reap(pid: u32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: waitpid(2) with a null status pointer writes no memory; for a pid
    // that is not our child it fails with ECHILD, which we ignore.
    unsafe {
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
}
