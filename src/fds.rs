//! File descriptors: the limit a long-running process raises at start, and a plain word for
//! "this process has none left" (EMFILE), which otherwise surfaces as whatever the failed
//! open was for (git's "does not appear to be a git repository").

/// Raise the soft limit on open files to the hard one; returns the soft limit now in force.
pub fn raise_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// Whether `e` is the process (EMFILE) or the system (ENFILE) running out of file descriptors.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// When no file can be opened now for want of descriptors, what to say about it.
pub fn exhausted() -> Option<String> {
    match std::fs::File::open("/dev/null") {
        Ok(_) => None,
        Err(e) if is_exhaustion(&e) => {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: as above.
            let limit = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
                format!("the limit is {}", lim.rlim_cur)
            } else {
                "the limit is unknown".to_string()
            };
            Some(format!("out of file descriptors ({e}; {limit})"))
        }
        Err(_) => None,
    }
}
