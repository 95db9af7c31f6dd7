//! Large cached bodies as sealed in-memory files, so a hit sends them with `sendfile`.
//!
//! Written from memory with `writev`, a 60 KB hit spent a quarter of the edge's CPU in the
//! copy into socket buffers (`_copy_from_iter`, measured with `perf` under load). With
//! `sendfile` the socket references the file's pages instead, as nginx's cache does with
//! its cache files. Each body gets its own `memfd`, sealed against every change: pages a
//! socket still references can never be rewritten, and they are freed only when the last
//! reference (the entry or a socket buffer) lets go. Small bodies are cheaper to copy than a
//! second system call, so only bodies of at least [`MIN_LEN`] get a file.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use rustix::fs::{MemfdFlags, SealFlags};

/// Bodies shorter than this are written from memory.
pub const MIN_LEN: usize = 32 * 1024;

/// Files open now, and at most how many: a share of the descriptor limit, so that
/// connections and cache files never run short because of these.
static OPEN: Budget = Budget(AtomicUsize::new(0));
static MAX_OPEN: OnceLock<usize> = OnceLock::new();

/// A count of open files that refuses to pass a maximum.
struct Budget(AtomicUsize);

impl Budget {
    fn reserve(&self, max: usize) -> bool {
        self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).is_ok()
    }

    fn release(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One body in a sealed `memfd`. Closing it (on drop) gives the descriptor back.
#[derive(Debug)]
pub struct BodyFile {
    fd: OwnedFd,
    len: u64,
}

impl BodyFile {
    /// A file holding `body`, or `None` if it is too small to gain from one, if the share
    /// of descriptors is used up, or if the system refuses (then the body is sent from
    /// memory, as small ones are).
    pub fn new(body: &[u8]) -> Option<BodyFile> {
        if body.len() < MIN_LEN || !OPEN.reserve(*MAX_OPEN.get_or_init(max_open)) {
            return None;
        }
        let file = Self::create(body);
        if file.is_none() {
            OPEN.release();
        }
        file
    }

    fn create(body: &[u8]) -> Option<BodyFile> {
        let fd = rustix::fs::memfd_create("imgedge-body", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).ok()?;
        let mut done = 0;
        while done < body.len() {
            match rustix::io::write(&fd, &body[done..]) {
                Ok(0) => return None,
                Ok(n) => done += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return None,
            }
        }
        let seals = SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL;
        rustix::fs::fcntl_add_seals(&fd, seals).ok()?;
        Some(BodyFile { fd, len: body.len() as u64 })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsFd for BodyFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for BodyFile {
    fn drop(&mut self) {
        OPEN.release();
    }
}

/// A quarter of the descriptor limit (which `server::run` raises to the hard limit at
/// start, as nginx's `worker_rlimit_nofile` would): a cache of 60 KB bodies needs thousands.
fn max_open() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
    usize::try_from(soft / 4).unwrap_or(usize::MAX).min(1 << 18)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_file_holds_the_body_and_cannot_change() {
        let body: Vec<u8> = (0..MIN_LEN * 2).map(|i| (i * 31 % 251) as u8).collect();
        let f = BodyFile::new(&body).expect("a file for a large body");
        assert_eq!(f.len(), body.len() as u64);
        let mut back = vec![0u8; body.len()];
        let n = rustix::io::pread(&f, &mut back, 0).unwrap();
        assert_eq!(n, body.len());
        assert_eq!(back, body);
        // sealed: neither written nor resized
        assert!(rustix::io::pwrite(&f, b"x", 0).is_err());
        assert!(rustix::fs::ftruncate(&f, 1).is_err());
        assert!(BodyFile::new(&body[..MIN_LEN - 1]).is_none(), "small bodies stay in memory");
    }

    #[test]
    fn the_budget_refuses_past_its_maximum_and_frees_on_release() {
        let b = Budget(AtomicUsize::new(0));
        assert!(b.reserve(2) && b.reserve(2));
        assert!(!b.reserve(2), "a third file past a maximum of two");
        b.release();
        assert!(b.reserve(2), "a released file makes room");
        assert_eq!(b.0.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn the_descriptor_share_is_a_quarter_of_the_limit() {
        let max = max_open();
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(1 << 20);
        assert_eq!(max as u64, (soft / 4).min(1 << 18));
        assert!(max >= 1);
    }
}
