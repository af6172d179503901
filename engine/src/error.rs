//! Errors a person can act on: each startup failure says what went wrong and
//! what to change on the host.

use std::io;

/// Why the engine could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `kernel.io_uring_disabled` forbids io_uring for this process.
    #[error(
        "io_uring is disabled on this host (/proc/sys/kernel/io_uring_disabled = {value}); \
         run `sysctl -w kernel.io_uring_disabled=0` (or add this user to the group in \
         kernel.io_uring_group when the value is 1)"
    )]
    Disabled { value: u8 },

    /// A seccomp filter (Docker, systemd `SystemCallFilter=`, gVisor) refused the syscall.
    #[error(
        "io_uring_setup was refused with EPERM although the kernel allows io_uring: a seccomp \
         profile is blocking it; run the container with a profile that allows io_uring_setup, \
         io_uring_enter and io_uring_register (e.g. `--security-opt seccomp=unconfined`), or \
         drop the systemd SystemCallFilter that excludes them"
    )]
    Forbidden,

    /// The kernel has no io_uring at all (too old, or built without it).
    #[error(
        "this kernel has no io_uring (io_uring_setup returned ENOSYS): ringhub needs Linux 6.1 \
         or newer built with CONFIG_IO_URING=y (or a seccomp profile is answering ENOSYS)"
    )]
    Unsupported,

    /// Ring memory could not be locked or allocated.
    #[error(
        "io_uring could not allocate its rings ({source}): raise the locked-memory limit \
         (`ulimit -l unlimited`, or LimitMEMLOCK=infinity in the systemd unit) or lower \
         --ring-entries"
    )]
    NoMemory { source: io::Error },

    /// The kernel lacks an operation the reactor is built on.
    #[error(
        "this kernel's io_uring lacks {missing}: ringhub needs Linux 6.1 or newer \
         (multishot accept and recv, provided-buffer rings, MSG_RING)"
    )]
    MissingFeature { missing: String },

    /// A configuration value the engine cannot run with.
    #[error("invalid engine configuration: {0}")]
    Config(String),

    /// Any other failure of a named step.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

impl EngineError {
    /// Wraps an I/O error with the step that failed.
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> EngineError {
        move |source| EngineError::Io { what, source }
    }
}
