//! Where a workflow's state lives (SPEC §4): `--state DIR`, else `$FLOWRUN_STATE`, else
//! `$XDG_STATE_HOME/flowrun/NAME-HASH` (`~/.local/state/...` when unset). Every command that takes the file finds
//! the same directory by this one rule.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The state a command was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `none`: no memory.
    None,
    /// Named by `--state` or `$FLOWRUN_STATE`: it must be usable.
    Given(PathBuf),
    /// The default place: when it cannot be made, the runner goes on without state.
    Default(PathBuf),
}

impl Choice {
    pub fn path(&self) -> Option<&Path> {
        match self {
            Choice::None => None,
            Choice::Given(p) | Choice::Default(p) => Some(p),
        }
    }
}

/// Decide the state directory of the workflow `file` named `name`.
pub fn choose(flag: Option<&str>, file: &Path, name: &str) -> Choice {
    let given = flag.map(str::to_string).or_else(|| {
        std::env::var("FLOWRUN_STATE")
            .ok()
            .filter(|v| !v.is_empty())
    });
    match given.as_deref() {
        Some("none") => Choice::None,
        Some(dir) => Choice::Given(PathBuf::from(dir)),
        None => Choice::Default(default_dir(file, name)),
    }
}

/// `$XDG_STATE_HOME/flowrun/NAME-HASH`; a relative `XDG_STATE_HOME` is ignored, as the XDG spec says.
fn default_dir(file: &Path, name: &str) -> PathBuf {
    base().join(format!("{}-{}", safe_name(name), file_hash(file)))
}

fn base() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
            home.join(".local/state")
        })
        .join("flowrun")
}

fn file_hash(file: &Path) -> String {
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    format!("{:08x}", fnv1a(&canonical))
}

/// The state of a file whose text may not be valid now (`reload` of a broken edit) or whose name changed since
/// its runner started: the default directory of this file's path whatever its NAME, when exactly one exists.
pub fn find_by_file(flag: Option<&str>, file: &Path) -> Choice {
    let given = flag.map(str::to_string).or_else(|| {
        std::env::var("FLOWRUN_STATE")
            .ok()
            .filter(|v| !v.is_empty())
    });
    match given.as_deref() {
        Some("none") => return Choice::None,
        Some(dir) => return Choice::Given(PathBuf::from(dir)),
        None => {}
    }
    let suffix = format!("-{}", file_hash(file));
    let found: Vec<PathBuf> = std::fs::read_dir(base())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&suffix))
        })
        .collect();
    match &found[..] {
        [one] => Choice::Default(one.clone()),
        _ => Choice::None,
    }
}

/// A workflow name as one path component: letters, digits, `.`, `_`, `-`; anything else becomes `_`.
fn safe_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(64)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            '.' => '.',
            _ => '_',
        })
        .collect();
    if out.is_empty() || out.starts_with('.') {
        out.insert(0, '_');
    }
    out
}

/// A stable 32-bit hash of the canonical path (FNV-1a: the same on every machine and version).
fn fnv1a(path: &Path) -> u32 {
    use std::os::unix::ffi::OsStrExt;
    path.as_os_str()
        .as_bytes()
        .iter()
        .fold(0x811c_9dc5u32, |h, &b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        })
}

/// Make the directory (and its parents) 0700; returns its absolute path (history keeps absolute log paths, so
/// `logs` and pruning find them from any working directory). An existing directory is made 0700 only when it
/// is a state directory already (or empty): `--state .` must not lock a project folder away from its group.
/// Also returns a warning when an existing, shared directory is left as it is.
pub fn create(dir: &Path) -> std::io::Result<(PathBuf, Option<String>)> {
    if dir.as_os_str().is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty path is no directory",
        ));
    }
    let existed = dir.exists();
    if existed && !dir.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "it exists and is not a directory",
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let mut warning = None;
    let mode = std::fs::metadata(&dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        let ours =
            !existed || dir.join("state.db").exists() || std::fs::read_dir(&dir)?.next().is_none();
        if ours {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        } else {
            warning = Some(format!(
                "the state directory {} is shared (mode {mode:o}) and holds other files: it is left as it is; its files are private (0600) but a directory of its own is safer",
                dir.display()
            ));
        }
    }
    // A directory that exists but cannot be written is found now, not at the first run. The probe's name is
    // the process's own: two runners starting at once must not delete each other's.
    let probe = dir.join(format!(".flowrun-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(probe)?;
    Ok((dir, warning))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_safe_component() {
        assert_eq!(safe_name("nightly backup"), "nightly_backup");
        assert_eq!(safe_name("../x"), "_.._x");
        assert_eq!(safe_name(""), "_");
        assert_eq!(safe_name("a-b_c.1"), "a-b_c.1");
    }

    #[test]
    fn the_hash_is_stable_and_8_hex_digits() {
        // FNV-1a of "/a": fixed, so a directory found by one version is found by the next.
        assert_eq!(format!("{:08x}", fnv1a(Path::new("/a"))), "70d2182d");
        assert_ne!(fnv1a(Path::new("/a")), fnv1a(Path::new("/b")));
    }
}
