//! The local origin: a file opened beneath the origin's root. Keys are already relative
//! and free of `..` (`options::normalize_key`), but a symlink inside the root could still
//! point anywhere the process may read; `openat2(RESOLVE_BENEATH)` makes the kernel refuse
//! any resolution that leaves the root (symlinks that stay inside work).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::Fetched;
use crate::error::Error;

/// Reads `key` under `root` (canonical), at most `max` bytes.
pub(super) fn fetch(root: &Path, key: &str, max: u64) -> Result<Fetched, Error> {
    let fd = open_beneath(root, key)?;
    let st = rustix::fs::fstat(&fd).map_err(io_error)?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(Error::SourceNotFound);
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > max {
        return Err(Error::SourceTooBig(max));
    }
    // the file may grow after fstat: read one byte past the cap to notice
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    std::fs::File::from(fd)
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| Error::Origin(e.to_string()))?;
    if buf.len() as u64 > max {
        return Err(Error::SourceTooBig(max));
    }
    let etag = format!("{:x}-{:x}.{:x}-{:x}", st.st_ino, st.st_mtime, st.st_mtime_nsec, size);
    Ok(Fetched { bytes: buf.into(), etag: Some(etag) })
}

fn open_beneath(root: &Path, key: &str) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    let dir =
        rustix::fs::open(root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(io_error)?;
    match rustix::fs::openat2(&dir, key, flags, Mode::empty(), ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS) {
        Ok(fd) => Ok(fd),
        // kernels before 5.6 (or a filter refusing the call): resolve, check, open
        Err(Errno::NOSYS) | Err(Errno::PERM) => open_checked(root, key, flags),
        Err(e) => Err(open_error(e)),
    }
}

/// Without `openat2`: the key's real path must lie under the root; opened without
/// following a symlink swapped in as its last component since.
fn open_checked(root: &Path, key: &str, flags: OFlags) -> Result<OwnedFd, Error> {
    let real = std::fs::canonicalize(root.join(key)).map_err(|e| match e.raw_os_error() {
        Some(code) => open_error(Errno::from_raw_os_error(code)),
        None => Error::Origin(e.to_string()),
    })?;
    if !real.starts_with(root) {
        return Err(Error::SourceForbidden);
    }
    rustix::fs::open(&real, flags | OFlags::NOFOLLOW, Mode::empty()).map_err(open_error)
}

fn open_error(e: Errno) -> Error {
    match e {
        Errno::NOENT | Errno::NOTDIR | Errno::ISDIR | Errno::NAMETOOLONG => Error::SourceNotFound,
        // the path leads out of the root, or through a symlink where none may be
        Errno::XDEV | Errno::LOOP | Errno::ACCESS | Errno::PERM => Error::SourceForbidden,
        e => io_error(e),
    }
}

fn io_error(e: Errno) -> Error {
    Error::Origin(std::io::Error::from(e).to_string())
}
