//! A private network namespace for one test: the test body runs on a thread of its own that
//! `unshare(CLONE_NEWNET)`s and brings up its loopback, so the sockets it opens and the processes
//! it spawns (mosquitto, the agent) see only each other. Tests whose expectations depend on the
//! whole set of listening ports (an `in-port-set` allow-list) need that: on a shared machine any
//! other process may open a port at any time.
//!
//! Needs CAP_SYS_ADMIN (CI runs as root). Without it the test fails and says so; it never skips.

/// Runs `body` on a new thread inside a fresh network namespace with `lo` up; panics of the
/// body are re-raised on the caller's thread.
pub fn run_isolated<F: FnOnce() + Send + 'static>(body: F) {
    let handle = std::thread::Builder::new()
        .name("netns-test".into())
        .spawn(move || {
            if let Err(e) = enter() {
                panic!(
                    "this test needs its own network namespace ({e}): run the tests as root, \
                     or with CAP_SYS_ADMIN"
                );
            }
            body();
        })
        .expect("spawn the namespaced test thread");
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// [`run_isolated`] for an async test body, on a current-thread tokio runtime of its own.
pub fn run_isolated_async<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    run_isolated(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
            .block_on(body());
    });
}

/// Moves the calling thread into a new network namespace and sets its `lo` up.
fn enter() -> Result<(), String> {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only the calling thread's namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(format!(
            "unshare(CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a plain datagram socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write `req`, which outlives both calls; the
    // flags member of the union is the one these requests use.
    let result = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(format!(
                "SIOCGIFFLAGS lo: {}",
                std::io::Error::last_os_error()
            ))
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(format!(
                    "SIOCSIFFLAGS lo: {}",
                    std::io::Error::last_os_error()
                ))
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    result
}
