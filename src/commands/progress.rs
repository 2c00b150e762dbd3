//! Progress on long transfers: an indicatif bar on stderr, only when stderr is a terminal,
//! never with -q, and only once a transfer has taken a moment (so quick files draw nothing).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a transfer runs before its bar appears.
const DELAY: Duration = Duration::from_millis(200);

pub struct Progress {
    enabled: bool,
    started: Instant,
    total: Option<u64>,
    label: String,
    bar: Option<ProgressBar>,
}

/// Whether stderr is a terminal, asked once per process rather than once per file.
fn stderr_is_terminal() -> bool {
    static TTY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TTY.get_or_init(|| std::io::stderr().is_terminal())
}

impl Progress {
    /// `quiet` and a non-terminal stderr turn it off for good.
    pub fn new(quiet: bool, total: Option<u64>, label: impl Into<String>) -> Progress {
        Progress {
            enabled: !quiet && stderr_is_terminal(),
            started: Instant::now(),
            total,
            label: label.into(),
            bar: None,
        }
    }

    /// Called once per chunk: a clock read until the bar exists, then an atomic store.
    pub fn set(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        if self.bar.is_none() {
            if self.started.elapsed() < DELAY {
                return;
            }
            let b = self.make_bar();
            // The bar starts late, with bytes already done: count them as history, not as
            // the first rate sample (which would read hundreds of GiB/s).
            b.set_position(done);
            b.reset_eta();
            self.bar = Some(b.with_elapsed(self.started.elapsed()));
            return;
        }
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    fn make_bar(&self) -> ProgressBar {
        let color = crate::commands::term::color_stderr();
        let (template, bar) = match self.total {
            Some(_) => (
                "{msg} {wide_bar} {bytes}/{total_bytes} {rate} ETA {eta}",
                true,
            ),
            None => ("{msg} {spinner} {bytes} {rate} {elapsed}", false),
        };
        let template = if color {
            template.replace("{wide_bar}", "{wide_bar:.cyan/blue}")
        } else {
            template.into()
        };
        let style = ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .with_key("rate", rate)
            .with_key("eta", eta);
        let style = if bar {
            style.progress_chars("=> ")
        } else {
            style
        };
        let b = ProgressBar::with_draw_target(self.total, ProgressDrawTarget::stderr())
            .with_style(style);
        b.set_message(self.label.clone());
        b
    }
}

/// The rate so far: bytes done over the time since the transfer started (the bar appears
/// 200 ms in, with bytes already done; indicatif's own estimate would take those as done in
/// no time and show hundreds of GiB/s). Nothing until a rate can be told.
fn rate(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let secs = state.elapsed().as_secs_f64();
    if secs >= 0.05 && state.pos() > 0 {
        let per_sec = (state.pos() as f64 / secs) as u64;
        let _ = write!(w, "{}/s", indicatif::HumanBytes(per_sec));
    }
}

/// The time left at the rate so far (the whole transfer's, as [`rate`]): indicatif's own
/// estimate weighs the first samples after a late start so that a 3 s transfer once showed
/// 44 s. Nothing until a rate can be told.
fn eta(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    if let Some(left) = eta_secs(state.pos(), state.len(), state.elapsed().as_secs_f64()) {
        let _ = match left {
            s if s < 60 => write!(w, "{s}s"),
            s if s < 3600 => write!(w, "{}m{:02}s", s / 60, s % 60),
            s => write!(w, "{}h{:02}m", s / 3600, s % 3600 / 60),
        };
    }
}

/// Seconds left for `len` bytes with `pos` done in `secs`, at that steady rate.
fn eta_secs(pos: u64, len: Option<u64>, secs: f64) -> Option<u64> {
    let len = len?;
    if secs < 0.05 || pos == 0 {
        return None;
    }
    let left = len.saturating_sub(pos) as f64 * secs / pos as f64;
    Some(left.ceil() as u64)
}

impl Drop for Progress {
    /// Removes the bar, leaving the terminal as it was, however the transfer ended.
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_time_left_is_the_rest_at_the_rate_so_far() {
        // 10% in 0.28 s of a 2.8 s transfer: 2.52 s left, said as 3 s.
        assert_eq!(super::eta_secs(100, Some(1000), 0.28), Some(3));
        assert_eq!(super::eta_secs(1000, Some(1000), 2.8), Some(0));
        assert_eq!(super::eta_secs(0, Some(1000), 1.0), None);
        assert_eq!(super::eta_secs(10, None, 1.0), None);
        assert_eq!(super::eta_secs(10, Some(20), 0.01), None);
    }
}
