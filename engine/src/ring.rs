//! Ring setup: the strongest flag set the kernel accepts, the opcodes the
//! reactor needs, and a diagnosis when io_uring is not available at all.

use io_uring::{IoUring, Probe, opcode};
use std::io;

use crate::error::EngineError;

/// Which setup flags the kernel accepted, from fastest to most portable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// `SINGLE_ISSUER | DEFER_TASKRUN` (6.1+): completions run only when we wait.
    DeferTaskrun,
    /// `SINGLE_ISSUER | COOP_TASKRUN` (6.0+).
    SingleIssuerCoop,
    /// `COOP_TASKRUN | TASKRUN_FLAG` (5.19+).
    Coop,
    /// `SINGLE_ISSUER` alone: for extra rings the thread does not wait on.
    SingleIssuer,
    /// No optional flags.
    Plain,
}

/// Opcodes the reactor submits; a kernel missing one cannot run it.
const REQUIRED: &[(u8, &str)] = &[
    (opcode::Accept::CODE, "ACCEPT"),
    (opcode::RecvMulti::CODE, "RECV"),
    (opcode::SendMsg::CODE, "SENDMSG"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
    (opcode::Timeout::CODE, "TIMEOUT"),
    (opcode::Read::CODE, "READ"),
    (opcode::MsgRingData::CODE, "MSG_RING"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::Shutdown::CODE, "SHUTDOWN"),
];

type Apply = fn(&mut io_uring::Builder);

/// Builds one ring with `entries` submission slots, trying flag sets from the
/// fastest down; only `EINVAL` (flag unknown to this kernel) moves down the
/// chain, any other error is diagnosed.
pub fn build_ring(entries: u32) -> Result<(IoUring, RingMode), EngineError> {
    let attempts: [(RingMode, Apply); 4] = [
        (RingMode::DeferTaskrun, |b| {
            b.setup_single_issuer().setup_defer_taskrun();
        }),
        (RingMode::SingleIssuerCoop, |b| {
            b.setup_single_issuer().setup_coop_taskrun();
        }),
        (RingMode::Coop, |b| {
            b.setup_coop_taskrun().setup_taskrun_flag();
        }),
        (RingMode::Plain, |_| {}),
    ];
    build_first(entries, &attempts)
}

/// Builds a ring the thread never waits on: it signals an eventfd that the
/// thread's main ring polls. Its completions must be posted without the
/// thread entering it, so neither DEFER_TASKRUN (completions wait for the
/// owner to enter) nor COOP_TASKRUN (no wake-up of the sleeping owner).
pub fn build_extra_ring(entries: u32) -> Result<(IoUring, RingMode), EngineError> {
    let attempts: [(RingMode, Apply); 2] = [
        (RingMode::SingleIssuer, |b| {
            b.setup_single_issuer();
        }),
        (RingMode::Plain, |_| {}),
    ];
    build_first(entries, &attempts)
}

fn build_first(
    entries: u32,
    attempts: &[(RingMode, Apply)],
) -> Result<(IoUring, RingMode), EngineError> {
    let cq = entries.saturating_mul(8).next_power_of_two();
    let mut last = None;
    for &(mode, apply) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq).setup_submit_all();
        apply(&mut builder);
        match builder.build(entries) {
            Ok(ring) => {
                probe(&ring)?;
                return Ok((ring, mode));
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
            Err(e) => return Err(diagnose(e)),
        }
    }
    Err(diagnose(last.unwrap_or_else(|| {
        io::Error::from_raw_os_error(libc::EINVAL)
    })))
}

/// Checks that every opcode in [`REQUIRED`] is known to the kernel.
fn probe(ring: &IoUring) -> Result<(), EngineError> {
    let mut probe = Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|_| EngineError::MissingFeature {
            missing: "IORING_REGISTER_PROBE (kernel older than 5.6)".into(),
        })?;
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EngineError::MissingFeature {
            missing: format!("opcode(s) {}", missing.join(", ")),
        })
    }
}

/// Turns an `io_uring_setup` failure into the reason a person can fix.
pub fn diagnose(e: io::Error) -> EngineError {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(0);
    classify(e, disabled)
}

/// The pure part of [`diagnose`], so every branch is tested.
fn classify(e: io::Error, disabled: u8) -> EngineError {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) if disabled != 0 => {
            EngineError::Disabled { value: disabled }
        }
        Some(libc::EPERM) => EngineError::Forbidden,
        Some(libc::ENOSYS) => EngineError::Unsupported,
        Some(libc::ENOMEM) => EngineError::NoMemory { source: e },
        _ => EngineError::Io {
            what: "io_uring_setup",
            source: e,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn each_setup_failure_names_its_cause() {
        assert!(matches!(
            classify(os(libc::EPERM), 2),
            EngineError::Disabled { value: 2 }
        ));
        assert!(matches!(
            classify(os(libc::EPERM), 0),
            EngineError::Forbidden
        ));
        assert!(matches!(
            classify(os(libc::ENOSYS), 0),
            EngineError::Unsupported
        ));
        assert!(matches!(
            classify(os(libc::ENOMEM), 0),
            EngineError::NoMemory { .. }
        ));
        let msg = classify(os(libc::ENOMEM), 0).to_string();
        assert!(msg.contains("ulimit -l"), "{msg}");
    }

    #[test]
    fn this_host_builds_a_ring_with_every_required_opcode() {
        let (_ring, mode) = build_ring(64).expect("io_uring must work on the test host");
        // Linux 6.1+ is the supported floor; the test host is newer.
        assert_eq!(mode, RingMode::DeferTaskrun);
    }
}
