//! Waiting for a plugin's `vnt_events` ring buffer on a plain thread: the
//! kernel makes the map's fd readable when a program submits with a wakeup
//! (`vnt_submit` wakes only once a batch has piled up), so the reader also
//! wakes on a timeout to drain the rest.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Block until `ring` is readable or `timeout` passes. `Ok(true)`: readable.
/// An interrupted wait (a signal) is `Ok(false)`, like a timeout.
pub fn wait_readable(ring: &impl AsRawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: ring.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `pfd` is one valid, writable pollfd for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(e)
        };
    }
    Ok(n > 0 && pfd.revents & libc::POLLIN != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_with_data_is_readable_an_empty_one_times_out() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe() writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: pipe() just returned these descriptors; each is owned once.
        let (r, w) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        assert!(!wait_readable(&r, Duration::from_millis(10)).unwrap());
        std::io::Write::write_all(&mut &w, b"x").unwrap();
        assert!(wait_readable(&r, Duration::from_millis(10)).unwrap());
    }
}
