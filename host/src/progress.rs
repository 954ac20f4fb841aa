//! Progress of a long command on stderr: one line redrawn in place on a terminal, a plain
//! line every so often otherwise (CI logs, `2> file`), so a long run is never silent.
//! Commands end with a one-line summary of their own; this only reports on the way.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Between plain lines when stderr is not a terminal, unless `SLUICE_PROGRESS_INTERVAL_MS`
/// says otherwise.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Between redraws on a terminal.
const TERMINAL_EVERY: Duration = Duration::from_millis(200);

pub struct Progress {
    what: &'static str,
    started: Instant,
    last: Instant,
    every: Duration,
    terminal: bool,
    drawn: bool,
}

impl Progress {
    /// Progress of `what` (the command's name, which starts each line).
    pub fn new(what: &'static str) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let every = std::env::var("SLUICE_PROGRESS_INTERVAL_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
            .unwrap_or(if terminal {
                TERMINAL_EVERY
            } else {
                PLAIN_EVERY
            });
        let now = Instant::now();
        Progress {
            what,
            started: now,
            last: now,
            every,
            terminal,
            drawn: false,
        }
    }

    /// Report `status` if one is due; `status` is only called then.
    pub fn tick(&mut self, status: impl FnOnce() -> String) {
        if self.last.elapsed() < self.every {
            return;
        }
        self.last = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = if self.terminal {
            self.drawn = true;
            write!(err, "\r\x1b[K{}: {} ({elapsed:.0} s)", self.what, status())
        } else {
            writeln!(err, "{}: {} ({elapsed:.0} s)", self.what, status())
        };
        let _ = err.flush();
    }

    /// Clear the line drawn on a terminal, before the summary is printed.
    pub fn finish(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
            self.drawn = false;
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
