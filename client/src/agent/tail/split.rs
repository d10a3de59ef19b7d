//! Cutting a byte stream into lines, keeping at most one partial line, and
//! knowing where each complete line ends (the offset a position may save).

use super::Line;

pub(super) struct Splitter {
    pending: Vec<u8>,
    overlong: bool,
    max: usize,
    /// Bytes fed since the start (or the last reset).
    fed: u64,
    /// Offset after the last complete line: where reading resumes.
    committed: u64,
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Splitter {
    pub fn new(max: usize) -> Self {
        Self {
            pending: Vec::new(),
            overlong: false,
            max,
            fed: 0,
            committed: 0,
        }
    }

    /// The longest line it takes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes fed since the start (or the last reset).
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// Offset (from the start of what was fed) after the last complete line.
    pub fn committed(&self) -> u64 {
        self.committed
    }

    /// Hands each complete line to `out` with the offset after its newline.
    pub fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(Line<'_>, u64)) {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            self.fed += piece.len() as u64;
            let complete = piece.last() == Some(&b'\n');
            let body = if complete {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if complete {
                self.committed = self.fed;
            }
            if !self.overlong {
                if self.pending.len() + body.len() > self.max {
                    self.overlong = true;
                    self.pending = Vec::new();
                    out(Line::TooLong, self.committed);
                } else if complete && self.pending.is_empty() {
                    out(Line::Text(strip_cr(body)), self.committed);
                } else {
                    self.pending.extend_from_slice(body);
                    if complete {
                        out(Line::Text(strip_cr(&self.pending)), self.committed);
                        self.pending.clear();
                    }
                }
            }
            if complete {
                self.overlong = false;
            }
        }
    }

    /// The input ended for good (stdin closed, or a file rotated away past
    /// its grace period): a last line without a newline is still a line.
    pub fn finish(&mut self, out: &mut dyn FnMut(Line<'_>, u64)) {
        if !self.pending.is_empty() && !self.overlong {
            self.committed = self.fed;
            out(Line::Text(strip_cr(&self.pending)), self.committed);
        }
        self.reset();
    }

    pub fn reset(&mut self) {
        self.pending.clear();
        self.overlong = false;
        self.fed = 0;
        self.committed = 0;
    }
}
