//! Thread priorities. The main runtime carries the report streams, the writer and its
//! blocking work: throughput work, where a few milliseconds do not matter. Operators'
//! queries are served by a runtime of their own (see `listener`), whose threads keep
//! the process's priority; the main runtime's threads run a few nice levels lower, so
//! that when ingest saturates the cores the scheduler gives a query its core first
//! instead of making it wait its turn behind report streams.

/// How many nice levels below the process the main runtime's threads run.
pub const INGEST_NICE: i32 = 5;

/// Sets the calling thread's priority to [`INGEST_NICE`] levels below the main
/// thread's (Linux keeps a nice value per thread, and threads it starts inherit it;
/// counting from the main thread, a thread started by a lowered one is not lowered
/// twice). Raising one's own nice value needs no privilege; should it fail all the
/// same, the thread keeps the priority it has. Does nothing on other systems.
pub fn lower_for_ingest() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpid, getpriority_process, setpriority_process};
        // The main thread's id is the process's.
        if let Ok(base) = getpriority_process(Some(getpid())) {
            let me = Some(rustix::thread::gettid());
            let _ = setpriority_process(me, (base + INGEST_NICE).min(19));
        }
    }
}

/// The calling thread's nice value, where the system has one per thread.
pub fn current() -> Option<i32> {
    #[cfg(target_os = "linux")]
    {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn threads_are_lowered_once_below_the_main_thread() {
        let main = rustix::process::getpriority_process(Some(rustix::process::getpid()))
            .expect("main thread's nice value");
        let before = current().expect("nice value");
        let lowered = std::thread::spawn(|| {
            lower_for_ingest();
            let own = current().expect("nice value");
            // A thread started by a lowered thread inherits its priority, and lowering
            // it again (as a runtime does for every thread it starts) changes nothing.
            let child = std::thread::spawn(|| {
                lower_for_ingest();
                current().expect("nice value")
            })
            .join()
            .expect("child");
            (own, child)
        })
        .join()
        .expect("thread");
        let want = (main + INGEST_NICE).min(19);
        assert_eq!(lowered, (want, want));
        assert_eq!(
            current(),
            Some(before),
            "the caller's priority is untouched"
        );
    }
}
