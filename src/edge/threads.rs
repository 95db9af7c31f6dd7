//! Where connections live: the edge's runtime threads and how many connections each
//! serves. Pingora puts a new connection's task on a random thread; with a handful of
//! long-lived keep-alive connections that is often lopsided (8 connections on 2 threads
//! split 6:2 or worse 3 times in 10), and one thread's core saturates while the other's
//! idles. Each connection goes to a thread with the fewest, as nginx's `least_conn` would.
//!
//! And [`adopt`]: each connection's socket on the reactor of the thread that runs it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use std::time::SystemTime;

use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::Stream;
use tokio::runtime::{Handle, RuntimeFlavor};

struct Thread {
    handle: Handle,
    load: Arc<AtomicUsize>,
}

/// Every runtime thread that has served a connection (they register on first use).
static THREADS: Mutex<Vec<Thread>> = Mutex::new(Vec::new());

thread_local! {
    static HERE: RefCell<Option<Arc<AtomicUsize>>> = const { RefCell::new(None) };
}

/// This thread's connection count, registering the thread on first use. `None` on a
/// work-stealing runtime, where tasks move between threads by themselves.
fn here() -> Option<Arc<AtomicUsize>> {
    HERE.with(|h| {
        if let Some(load) = &*h.borrow() {
            return Some(load.clone());
        }
        let handle = Handle::try_current().ok()?;
        if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
            return None;
        }
        let load = Arc::new(AtomicUsize::new(0));
        THREADS.lock().unwrap_or_else(|e| e.into_inner()).push(Thread { handle, load: load.clone() });
        *h.borrow_mut() = Some(load.clone());
        Some(load)
    })
}

/// Picks the thread for a new connection: this one, or the one with the fewest
/// connections if it has fewer. The connection is counted there at once, so that
/// connections accepted in a burst spread out before any of them has started.
pub fn place() -> (Option<Handle>, Load) {
    let Some(mine) = here() else { return (None, Load(None)) };
    let threads = THREADS.lock().unwrap_or_else(|e| e.into_inner());
    let least = threads.iter().min_by_key(|t| t.load.load(Ordering::Relaxed));
    let (handle, load) = match least {
        Some(t) if t.load.load(Ordering::Relaxed) < mine.load(Ordering::Relaxed) => {
            (Some(t.handle.clone()), t.load.clone())
        }
        _ => (None, mine),
    };
    load.fetch_add(1, Ordering::Relaxed);
    (handle, Load(Some(load)))
}

/// One connection counted on its thread while this lives.
pub struct Load(Option<Arc<AtomicUsize>>);

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(l) = &self.0 {
            l.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Moves the connection onto the reactor of the thread running this task.
///
/// Pingora's accept loop registers every accepted socket with the I/O driver of the one
/// thread it runs on, then spawns the connection's task on a random thread. With
/// per-thread runtimes (`work_stealing: false`, imgedge's default) a task on another
/// thread is then woken through that thread's eventfd for every readiness event: two
/// threads and a context switch per request. Measured at 64 connections, that left a
/// sixth of the CPU idle. A duplicate of the descriptor registered here, with the original
/// closed (and so deregistered), keeps each connection's events on its own thread, as
/// nginx's workers do. `None` for anything but plain TCP, or if `dup` fails.
pub(super) fn adopt(stream: &Stream) -> Option<(tokio::net::TcpStream, SystemTime)> {
    let tcp = stream.as_any().downcast_ref::<TcpStream>()?;
    let fd = duplicate(tcp)?;
    let std = std::net::TcpStream::from(fd);
    // the duplicate shares the original's file status: it is non-blocking already
    let tcp_stream = tokio::net::TcpStream::from_std(std).ok()?;
    Some((tcp_stream, tcp.established_ts))
}

#[allow(unsafe_code)]
fn duplicate(tcp: &TcpStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `tcp`, which is borrowed for the whole call and so
    // stays open; the borrow ends before this function returns (only the duplicate lives on).
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    fd.try_clone_to_owned().ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_connections_go_to_the_thread_with_the_fewest() {
        use std::sync::mpsc;
        // two single-thread runtimes on their own threads, as pingora's with
        // `work_stealing: false`; this is the only test placing connections
        let rt = || tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (a, b) = (rt(), rt());
        let first = a.block_on(async { place() });
        assert!(first.0.is_none(), "the only thread keeps its connection");
        let (tx, rx) = mpsc::channel();
        let other = std::thread::spawn(move || {
            let (handle, load) = b.block_on(async { place() });
            assert!(handle.is_none(), "1:0, this thread has fewer: keeps it");
            tx.send(load).unwrap();
            b // the runtime must outlive the placements that name it
        });
        let b_load = rx.recv().unwrap();
        // 1:1 now; from thread a, connections alternate: stay (2:1), move (2:2), stay, move
        let placed: Vec<_> = (0..4).map(|_| a.block_on(async { place() })).collect();
        let moved: Vec<bool> = placed.iter().map(|(h, _)| h.is_some()).collect();
        assert_eq!(moved, [false, true, false, true]);
        drop((first, b_load, placed));
        drop(other.join().unwrap());
    }
}
