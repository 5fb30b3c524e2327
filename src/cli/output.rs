//! The one way the CLI prints. A reader that goes away (`peerfs add -r DIR | head -1`)
//! ends the output quietly: later lines are dropped, the work goes on (an `add` still
//! stores and pins everything), and the command exits 0, as if the rest had been
//! printed to nobody. Any other failure to write (a full disk behind `>`) is an error.
//!
//! `println!` would panic on the closed pipe instead ("failed printing to stdout"),
//! which killed an `add` halfway.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone; nothing is written after that.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Prints a line to stdout (`outln!("…")`, like `println!`); `Ok` when the reader has
/// gone.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Prints a line to stderr (`errln!("…")`), for notes beside the output. A stderr
/// nobody reads is not worth failing for.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::output::note(format_args!($($arg)*))
    };
}
pub(crate) use errln;

pub fn line(args: std::fmt::Arguments<'_>) -> io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| out.write_all(b"\n"));
    quiet_if_closed(written)
}

pub fn note(args: std::fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Stdout for bulk output (`cat`, `ls`, `export`), where the output is the work: a
/// closed pipe stops it with a `BrokenPipe` error, which `main` turns into exit 0.
pub fn stdout() -> Stdout {
    Stdout(io::stdout().lock())
}

pub struct Stdout(io::StdoutLock<'static>);

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        mark_closed(self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        mark_closed(self.0.flush())
    }
}

/// Whether the reader of stdout has gone.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

fn mark_closed<T>(r: io::Result<T>) -> io::Result<T> {
    if matches!(&r, Err(e) if e.kind() == io::ErrorKind::BrokenPipe) {
        CLOSED.store(true, Ordering::Relaxed);
    }
    r
}

fn quiet_if_closed(r: io::Result<()>) -> io::Result<()> {
    match mark_closed(r) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
