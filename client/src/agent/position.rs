//! Where the agent stands in a log, as saved in the state file: the file's
//! identity (device, inode, and a fingerprint of its first bytes) and the
//! offset after the last line delivered.
//!
//! Device and inode alone are not enough: a deleted file's inode is soon
//! reused, and copytruncate keeps the inode while replacing the content.
//! The fingerprint (FNV-1a of up to the first 256 bytes, as many as the
//! file had when it was taken) tells those apart, as Vector's
//! `fingerprinter.rs` does with a checksum of the first bytes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Bytes at the start of a file that identify it.
pub const FINGERPRINT_BYTES: u64 = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// How many bytes it covers (fewer than 256 while the file is shorter).
    pub len: u64,
    pub hash: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    pub fingerprint: Fingerprint,
    /// Everything before this byte is delivered; it is a line's start.
    pub offset: u64,
}

/// FNV-1a, 64 bits: small, stable across Rust releases (unlike std's
/// hasher), and good enough to tell logs apart.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, at)
}

#[cfg(not(unix))]
fn read_at(_: &File, _: &mut [u8], _: u64) -> io::Result<usize> {
    Ok(0)
}

/// The fingerprint of the first `len` bytes (fewer if the file is shorter),
/// read without moving the file's cursor.
pub fn fingerprint(file: &File, len: u64) -> io::Result<Fingerprint> {
    let mut buf = vec![0; len.min(FINGERPRINT_BYTES) as usize];
    let mut got = 0;
    while got < buf.len() {
        match read_at(file, &mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Fingerprint {
        len: got as u64,
        hash: fnv1a(&buf[..got]),
    })
}

/// Device and inode.
#[cfg(unix)]
pub fn identity(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
pub fn identity(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

impl Position {
    /// Whether `file` is the file this position was taken in, with at
    /// least `offset` bytes: same device and inode, same first bytes.
    pub fn is_in(&self, file: &File) -> io::Result<bool> {
        let m = file.metadata()?;
        if identity(&m) != (self.dev, self.ino) || m.len() < self.offset {
            return Ok(false);
        }
        Ok(fingerprint(file, self.fingerprint.len)? == self.fingerprint)
    }

    /// The file this position was taken in, looked for among the files in
    /// `dir` (where logrotate or `mv` puts a rotated log): after a restart
    /// the log's path may name a newer file, and the rest of the old one
    /// is still to be read.
    pub fn find_in(&self, dir: &Path) -> Option<(PathBuf, File)> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if self.is_in(&file).unwrap_or(false) {
                return Some((path, file));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_knows_its_file_by_inode_and_first_bytes() {
        let dir = std::env::temp_dir().join(format!("pm-pos-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("access.log");
        std::fs::write(&log, "first line\nsecond\n").unwrap();
        let file = File::open(&log).unwrap();
        let (dev, ino) = identity(&file.metadata().unwrap());
        let fp = fingerprint(&file, FINGERPRINT_BYTES).unwrap();
        assert_eq!(fp.len, 18);
        let at = Position {
            dev,
            ino,
            fingerprint: fp,
            offset: 11,
        };
        assert!(at.is_in(&file).unwrap());
        // rotated by rename: found under its new name
        std::fs::rename(&log, dir.join("access.log.1")).unwrap();
        std::fs::write(&log, "another file\n").unwrap();
        assert!(!at.is_in(&File::open(&log).unwrap()).unwrap());
        let (found, _) = at.find_in(&dir).unwrap();
        assert_eq!(found, dir.join("access.log.1"));
        // copytruncate: same inode, other first bytes
        std::fs::write(dir.join("access.log.1"), "xxxxx line\nsecond\n").unwrap();
        assert!(at.find_in(&dir).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
