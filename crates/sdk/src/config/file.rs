//! Configuration files: TOML parsed into typed structs, with errors that name the file, the
//! line and the key, so a typo is found in seconds.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file problem, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for FileError {}

/// A TOML file read into memory, kept so later checks can point at a line.
#[derive(Debug, Clone)]
pub struct TomlFile {
    path: PathBuf,
    text: String,
}

impl TomlFile {
    /// Reads the file; a missing or unreadable file is an error naming it.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, FileError> {
        let path = path.as_ref().to_path_buf();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Self { path, text }),
            Err(err) => Err(FileError {
                message: if err.kind() == std::io::ErrorKind::NotFound {
                    "file not found".into()
                } else {
                    err.to_string()
                },
                path,
                line: None,
                column: None,
            }),
        }
    }

    /// A file from text already in memory (tests, embedded defaults).
    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Parses into `T`. Unknown keys are errors when `T` says `deny_unknown_fields`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, FileError> {
        toml::from_str(&self.text).map_err(|err| {
            let message = err.message().trim().to_owned();
            match err.span() {
                Some(span) => self.error_at(span, message),
                None => self.error(message),
            }
        })
    }

    /// An error pointing at a byte range of the file (from `toml::Spanned`).
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> FileError {
        let (line, column) = line_and_column(&self.text, span.start);
        FileError {
            path: self.path.clone(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn error(&self, message: impl Into<String>) -> FileError {
        FileError {
            path: self.path.clone(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Conf {
        name: String,
        port: u16,
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let file = TomlFile::from_text("app.toml", "name = \"x\"\nport = 1\nprot = 2\n");
        let err = file.parse::<Conf>().unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("prot"), "{err}");
        assert!(err.to_string().starts_with("app.toml:3:1: "), "{err}");
    }

    #[test]
    fn bad_value_points_at_the_value() {
        let file = TomlFile::from_text("app.toml", "name = \"x\"\nport = 70000\n");
        let err = file.parse::<Conf>().unwrap_err();
        assert_eq!(err.line, Some(2));
    }

    #[test]
    fn missing_file_is_named() {
        let err = TomlFile::read("/nonexistent/flotilla.toml").unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/flotilla.toml: file not found");
    }
}
