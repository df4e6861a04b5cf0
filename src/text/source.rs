//! The workflow file's text and positions in it.

use std::path::{Path, PathBuf};

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub const fn new(offset: usize, len: usize) -> Self {
        Span { offset, len }
    }

    pub fn end(&self) -> usize {
        self.offset + self.len
    }

    /// A part of this span, for labels inside a string (a cron field).
    pub fn sub(&self, start: usize, len: usize) -> Span {
        Span::new(self.offset + start, len)
    }
}

impl From<Span> for miette::SourceSpan {
    fn from(s: Span) -> Self {
        (s.offset, s.len).into()
    }
}

/// A 1-based line and column (columns count characters, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// The file as read, with a line index for turning byte offsets into lines and columns.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

/// The largest workflow file read (SPEC §2).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is over 4 MiB ({size} bytes or more); a workflow file may be at most 4 MiB")]
    TooLarge { path: String, size: u64 },
    #[error("{path} is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { path: String, offset: usize },
}

impl Source {
    pub fn new(path: impl Into<PathBuf>, text: String) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(memchr::memchr_iter(b'\n', text.as_bytes()).map(|i| i + 1));
        Source {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// Read a workflow file, refusing what cannot be a workflow before parsing it.
    pub fn read(path: &Path) -> Result<Source, ReadError> {
        let shown = path.display().to_string();
        let io = |source| ReadError::Io {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge {
                path: shown,
                size: meta.len(),
            });
        }
        // Opened without waiting: a FIFO nobody writes would hold `open` (and a reload, and every reload after it)
        // for ever. Then read as usual: such a FIFO reads as empty at once; one a writer feeds (`<(cat file)`)
        // is read to its end.
        let file = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(io)?
        };
        {
            use std::os::fd::AsRawFd;
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
            }
        }
        // Read at most one byte past the limit: a device or FIFO reports size 0 and may never end (/dev/zero).
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, MAX_FILE_BYTES + 1),
            &mut bytes,
        )
        .map_err(io)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(ReadError::TooLarge {
                path: shown,
                size: bytes.len() as u64,
            });
        }
        let text = String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8 {
            path: shown.clone(),
            offset: e.utf8_error().valid_up_to(),
        })?;
        Ok(Source::new(path, text))
    }

    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        // A span from the parser is on a character boundary; round down if one ever is not, rather than panic.
        let mut end = offset;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let column = self.text[start..end].chars().count() + 1;
        LineCol {
            line: line + 1,
            column,
        }
    }

    /// The byte offset of a 1-based line and column (columns in characters), clamped to the text.
    pub fn offset_of(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.text.len();
        };
        let rest = &self.text[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        start
            + line_text
                .char_indices()
                .nth(column.saturating_sub(1))
                .map_or(line_text.len(), |(i, _)| i)
    }

    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.offset..span.end()).unwrap_or("")
    }
}
