//! `--token-file`: noticing that the token in it changed.

use std::path::{Path, PathBuf};

/// Reads a token file: its content without surrounding whitespace, never
/// empty.
pub fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("--token-file {}: empty", path.display()));
    }
    Ok(token.to_owned())
}

/// `--token-file` and the token last read from it.
///
/// A change is noticed by the file's content, not its modification time and
/// length: a token renewed within one tick of the file system's clock, with
/// the same length (a JWT re-issued with the same claims has one), keeps the
/// stamp, and a stamp taken after the first read would miss a renewal made
/// in between. The file is a few hundred bytes; reading it once a second
/// costs nothing.
pub struct TokenFile {
    path: PathBuf,
    last: String,
    unreadable: bool,
}

/// What a look at the token file found.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// The token read last time is still there (or the file is still
    /// unreadable, already reported).
    Unchanged,
    /// A different token.
    Changed(String),
    /// The file cannot be read, or is empty: reported once per spell, and
    /// the token in use is kept.
    Unreadable(String),
}

impl TokenFile {
    /// `in_use`: the token the agent started with, read from `path`.
    pub fn new(path: &Path, in_use: String) -> Self {
        Self {
            path: path.to_path_buf(),
            last: in_use,
            unreadable: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file again; `Changed` only when its token differs from the
    /// one read last.
    pub fn check(&mut self) -> TokenCheck {
        match read_token(&self.path) {
            Ok(token) => {
                self.unreadable = false;
                if token == self.last {
                    TokenCheck::Unchanged
                } else {
                    self.last.clone_from(&token);
                    TokenCheck::Changed(token)
                }
            }
            Err(_) if self.unreadable => TokenCheck::Unchanged,
            Err(e) => {
                self.unreadable = true;
                TokenCheck::Unreadable(e)
            }
        }
    }

    /// Reads the file whatever it holds (SIGHUP: the operator asked).
    pub fn reread(&mut self) -> Result<String, String> {
        let token = read_token(&self.path)?;
        self.unreadable = false;
        self.last.clone_from(&token);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("token-file-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_same_length_token_with_the_same_modification_time_is_still_a_change() {
        let path = temp_file("same-stamp", "token-aaaa\n");
        let mut file = TokenFile::new(&path, "token-aaaa".into());
        let stamp = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "token-bbbb\n").unwrap();
        // what a (modification time, length) stamp would have seen
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(stamp).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), stamp);
        assert_eq!(file.check(), TokenCheck::Changed("token-bbbb".into()));
        assert_eq!(file.check(), TokenCheck::Unchanged);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_renewal_before_the_watch_starts_is_noticed_at_the_first_check() {
        // the agent read "old" at start-up; the file was renewed before the
        // watch began
        let path = temp_file("early", "new\n");
        let mut file = TokenFile::new(&path, "old".into());
        assert_eq!(file.check(), TokenCheck::Changed("new".into()));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn an_unreadable_file_is_reported_once_and_its_return_is_a_change_only_if_the_token_differs() {
        let path = temp_file("gone", "t1\n");
        let mut file = TokenFile::new(&path, "t1".into());
        std::fs::write(&path, "  \n").unwrap();
        assert!(
            matches!(file.check(), TokenCheck::Unreadable(e) if e.ends_with("empty")),
            "an empty file is refused"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.check(), TokenCheck::Unchanged, "reported once");
        std::fs::write(&path, "t1\n").unwrap();
        assert_eq!(file.check(), TokenCheck::Unchanged);
        std::fs::remove_file(&path).unwrap();
        assert!(
            matches!(file.check(), TokenCheck::Unreadable(_)),
            "a new spell"
        );
        std::fs::write(&path, "t2").unwrap();
        assert_eq!(file.check(), TokenCheck::Changed("t2".into()));
        assert_eq!(file.reread(), Ok("t2".into()), "SIGHUP reads it anyway");
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
