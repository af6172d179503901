//! Starting the cores, stopping them, and turning SIGTERM/SIGINT into a
//! graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::config::Config;
use crate::core::{Core, Shared};
use crate::error::EngineError;
use crate::handler::{Handler, Mail};
use crate::listener::Listener;
use crate::mailbox::{Outbox, PostError, Waker, mailbox};
use crate::stats::{CoreStats, StatsSnapshot};

/// A running server: its cores, and what is needed to stop them.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    threads: Vec<JoinHandle<Result<(), EngineError>>>,
    handle: ShutdownHandle,
    stats: Vec<Arc<CoreStats>>,
}

/// Asks every core to shut down gracefully; cheap to clone, usable from any
/// thread.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
    wakers: Vec<Arc<Waker>>,
}

impl ShutdownHandle {
    /// Stop accepting, close every connection with 1001, drain, exit.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for w in &self.wakers {
            w.wake();
        }
    }
}

/// Reads the cores' counters (for metrics pushers, status pages).
#[derive(Debug, Clone)]
pub struct StatsReader(Vec<Arc<CoreStats>>);

impl StatsReader {
    /// Counters summed over cores.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot::sum(self.0.iter().map(|s| &**s))
    }
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain old data; CPU_SET writes inside it, and
    // sched_setaffinity reads it. A failure (e.g. a restricted cpuset) only
    // leaves the thread unpinned.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Posts to the cores' [`Handler::on_post`] from any thread, e.g. an I/O
/// thread that receives messages for the cores. Cheap to clone.
#[derive(Debug)]
pub struct Poster<P> {
    outboxes: Vec<Outbox<Mail<P>>>,
}

impl<P> Clone for Poster<P> {
    fn clone(&self) -> Self {
        Poster {
            outboxes: self.outboxes.clone(),
        }
    }
}

impl<P> Poster<P> {
    /// Posts `msg` to core `core`. Never blocks: a full mailbox is an error.
    pub fn post(&self, core: u16, msg: P) -> Result<(), PostError> {
        match self.outboxes.get(usize::from(core)) {
            Some(outbox) => outbox.post(Mail::App(msg)),
            None => Err(PostError::NoSuchCore),
        }
    }

    /// How many cores the server runs.
    pub fn cores(&self) -> u16 {
        self.outboxes.len() as u16
    }
}

impl Server {
    /// Binds the listeners and starts one thread per core, each running a
    /// handler made by `make_handler(core_id)`. Returns once every core has
    /// built its ring, or with the first core's startup error.
    pub fn start<H, F>(config: Config, make_handler: F) -> Result<Server, EngineError>
    where
        H: Handler,
        F: Fn(u16) -> H + Send + Sync + 'static,
    {
        Self::start_with_poster(config, make_handler).map(|(server, _)| server)
    }

    /// [`Server::start`], also returning a [`Poster`] into the cores.
    pub fn start_with_poster<H, F>(
        config: Config,
        make_handler: F,
    ) -> Result<(Server, Poster<H::Post>), EngineError>
    where
        H: Handler,
        F: Fn(u16) -> H + Send + Sync + 'static,
    {
        config.validate()?;
        let cores = config.core_count();
        let first = Listener::bind_exclusive(config.addr, config.backlog)
            .map_err(EngineError::io("binding the listening socket"))?;
        let addr = first
            .local_addr()
            .map_err(EngineError::io("reading the listening address"))?;
        let mut listeners = vec![first];
        for _ in 1..cores {
            listeners.push(
                Listener::bind(addr, config.backlog)
                    .map_err(EngineError::io("binding a sibling listener"))?,
            );
        }
        let config = Arc::new(config);
        let shared = Arc::new(Shared::default());
        let wakers: Vec<Arc<Waker>> = (0..cores)
            .map(|_| Waker::new().map(Arc::new))
            .collect::<Result<_, _>>()
            .map_err(EngineError::io("creating a wake eventfd"))?;
        let mut outboxes = Vec::with_capacity(cores);
        let mut inboxes = Vec::with_capacity(cores);
        for w in &wakers {
            let (tx, rx) = mailbox::<Mail<H::Post>>(config.mailbox_capacity, w.clone());
            outboxes.push(tx);
            inboxes.push(rx);
        }
        let stats: Vec<Arc<CoreStats>> = (0..cores).map(|_| Arc::default()).collect();
        let make_handler = Arc::new(make_handler);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), EngineError>>();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let mut threads = Vec::with_capacity(cores);
        for (i, (listener, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
            let config = config.clone();
            let shared = shared.clone();
            let outboxes = outboxes.clone();
            let stats = stats[i].clone();
            let make_handler = make_handler.clone();
            let ready = ready_tx.clone();
            let core_id = i as u16;
            let thread = std::thread::Builder::new()
                .name(format!("ringhub-core-{i}"))
                .spawn(move || {
                    // Cores never take SIGTERM/SIGINT: they go to the thread
                    // that waits for them (or to the application's own).
                    block_termination_signals();
                    if config.pin {
                        pin_to((config.cpu_offset + i) % cpus);
                    }
                    let handler = make_handler(core_id);
                    let core = Core::new(
                        core_id, config, listener, handler, inbox, outboxes, shared, stats,
                    );
                    match core {
                        Ok(core) => {
                            let _ = ready.send(Ok(()));
                            core.run()
                        }
                        Err(e) => {
                            let _ = ready.send(Err(e));
                            Ok(())
                        }
                    }
                })
                .map_err(EngineError::io("spawning a core thread"))?;
            threads.push(thread);
        }
        drop(ready_tx);
        let handle = ShutdownHandle { shared, wakers };
        for _ in 0..cores {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    handle.shutdown();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(e);
                }
                Err(_) => break,
            }
        }
        let server = Server {
            addr,
            threads,
            handle,
            stats,
        };
        Ok((server, Poster { outboxes }))
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that stops the server from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Counters summed over cores.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot::sum(self.stats.iter().map(|s| &**s))
    }

    /// A handle that reads the counters from any thread, also after the
    /// server has stopped.
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.stats.clone())
    }

    /// Counters of each core.
    pub fn core_stats(&self) -> Vec<StatsSnapshot> {
        self.stats
            .iter()
            .map(|s| StatsSnapshot::sum([&**s]))
            .collect()
    }

    /// Waits for every core to finish (after a shutdown).
    pub fn join(self) -> Result<(), EngineError> {
        let mut result = Ok(());
        for t in self.threads {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => {
                    result = Err(EngineError::Io {
                        what: "a core thread panicked",
                        source: std::io::Error::other("panic"),
                    })
                }
            }
        }
        result
    }

    /// Runs until SIGTERM or SIGINT, then shuts down gracefully.
    ///
    /// Blocks both signals in the calling thread (the cores block them
    /// already) and waits for them on a dedicated thread. Threads the
    /// application started earlier must block them too
    /// ([`block_termination_signals`] first thing in `main` does it).
    pub fn run_until_signal(self) -> Result<(), EngineError> {
        block_termination_signals();
        let handle = self.shutdown_handle();
        std::thread::Builder::new()
            .name("ringhub-signals".into())
            .spawn(move || {
                if wait_for_termination().is_ok() {
                    handle.shutdown();
                }
            })
            .map_err(EngineError::io("spawning the signal thread"))?;
        self.join()
    }
}

/// The SIGTERM + SIGINT set.
fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread, so they wait for
/// [`Server::run_until_signal`] instead of killing the process. Call it first
/// in `main`, before starting any thread (threads inherit the mask).
pub fn block_termination_signals() {
    let set = termination_set();
    // SAFETY: `set` is initialised; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for SIGTERM or SIGINT (which must be blocked in every thread).
fn wait_for_termination() -> Result<i32, ()> {
    let set = termination_set();
    let mut sig = 0;
    // SAFETY: `set` is initialised and `sig` is a live c_int.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc == 0 { Ok(sig) } else { Err(()) }
}
