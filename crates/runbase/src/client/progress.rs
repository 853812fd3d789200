//! The progress line `runbase run --wait` shows on stderr while it waits: the run's status
//! and the time waited, redrawn a few times a second, only when stderr is a terminal (a CI log
//! or a pipe gets nothing).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A progress line, or nothing when stderr is not a terminal.
pub struct Progress {
    state: Option<Arc<Mutex<String>>>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(run_id: &str, status: &str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                state: None,
                ticker: None,
            };
        }
        let state = Arc::new(Mutex::new(status.to_owned()));
        let shared = state.clone();
        let run_id = run_id.to_owned();
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for frame in FRAMES.iter().cycle() {
                tick.tick().await;
                let status = shared.lock().map(|s| s.clone()).unwrap_or_default();
                let mut err = std::io::stderr().lock();
                // Carriage return and "erase line": the line is redrawn in place.
                let _ = write!(
                    err,
                    "\r\x1b[2K{frame} {run_id} {status} {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                let _ = err.flush();
            }
        });
        Progress {
            state: Some(state),
            ticker: Some(ticker),
        }
    }

    /// The status most recently read.
    pub fn update(&self, status: &str) {
        if let Some(state) = &self.state
            && let Ok(mut s) = state.lock()
        {
            status.clone_into(&mut s);
        }
    }

    /// Stops redrawing and erases the line.
    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}
