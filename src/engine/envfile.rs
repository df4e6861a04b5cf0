//! A job's `env_file`s, read for each run off the dispatcher (on a blocking thread) and bounded: only regular
//! files (a FIFO would block the read for ever, `/dev/zero` would never end), at most [`ENV_FILE_MAX`] bytes each.
//! A file that breaks a rule fails that run, with the file's name and the rule, never the runner.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::limits::ENV_FILE_MAX;

/// Variables read from a job's `env_file`s, in order (a later file wins).
pub type FileEnv = Vec<(String, String)>;

/// The variables of `files`, in order; the first file that cannot be read fails the run with its reason.
pub fn read(files: &[PathBuf]) -> Result<FileEnv, String> {
    let mut vars = Vec::new();
    for file in files {
        let fail = |e: &dyn std::fmt::Display| format!("env_file {}: {e}", file.display());
        let text = read_bounded(file).map_err(|e| fail(&e))?;
        for item in dotenvy::from_read_iter(text.as_slice()) {
            vars.push(item.map_err(|e| fail(&e))?);
        }
    }
    Ok(vars)
}

/// The file's bytes: opened without blocking (a FIFO with no writer would hold `open` itself), checked to be a
/// regular file no larger than the bound, then read to at most the bound (a file growing meanwhile is cut off
/// and refused).
fn read_bounded(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a pipe, a device or a folder is never read)",
        ));
    }
    let too_large = || {
        std::io::Error::other(format!(
            "larger than {} KiB (an env file holds variables)",
            ENV_FILE_MAX / 1024
        ))
    };
    if meta.len() > ENV_FILE_MAX {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(ENV_FILE_MAX + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > ENV_FILE_MAX {
        return Err(too_large());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "X=1\n# note\nexport Y=\"two words\"\n").unwrap();
        std::fs::write(&b, "X=3\n").unwrap();
        let vars = read(&[a, b]).unwrap();
        assert_eq!(
            vars,
            [("X", "1"), ("Y", "two words"), ("X", "3")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn a_fifo_a_device_a_folder_and_a_large_file_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; ENV_FILE_MAX as usize + 1]).unwrap();
        for (file, says) in [
            (fifo, "not a regular file"),
            ("/dev/zero".into(), "not a regular file"),
            (dir.path().to_path_buf(), "not a regular file"),
            (big, "larger than 1024 KiB"),
            (dir.path().join("missing"), "No such file"),
        ] {
            let e = read(std::slice::from_ref(&file)).unwrap_err();
            assert!(
                e.contains(says) && e.contains(&file.display().to_string()),
                "{e}"
            );
        }
    }
}
