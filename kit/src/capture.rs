//! A shared in-memory writer, for in-process tests that hand the daemon library's log (or any
//! writer) somewhere they can read back, instead of the terminal.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

/// Bytes written through any of its [`Captured::writer`]s, readable with [`Captured::text`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// A writer appending to this capture.
    pub fn writer(&self) -> Box<dyn Write + Send> {
        Box::new(self.clone())
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[test]
fn every_writer_appends_to_the_same_text() {
    let c = Captured::default();
    c.writer().write_all(b"one ").unwrap();
    c.writer().write_all(b"two").unwrap();
    assert_eq!(c.text(), "one two");
}
