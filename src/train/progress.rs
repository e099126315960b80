//! Progress of a run: a bar on stderr when it is a terminal, plain log lines otherwise.

use std::io::IsTerminal;

/// A run's progress display.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: usize,
}

impl Progress {
    /// A display for `total` steps, `done` of them already run (a resumed run).
    pub fn new(total: usize, done: usize) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed}<{eta}] {msg}",
                )
                .expect("valid template"),
            );
            bar.set_position(done as u64);
            bar
        });
        Self { bar, total }
    }

    /// Shows the metrics summary `message` of step `done`.
    pub fn message(&self, done: usize, message: String) {
        match &self.bar {
            Some(bar) => bar.set_message(message),
            None => eprintln!("step {done}/{}  {message}", self.total),
        }
    }

    /// One more step done.
    pub fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// The run is over.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
