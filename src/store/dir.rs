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
/// `logs` and pruning find them from any working directory), and a notice when an existing, shared directory is
/// left as it is.
///
/// A state directory is trusted with the runner's writes (its lock file, its database, its logs), so it must be
/// the runner's user's: a directory of another user, or one anybody may write, is refused (they could put a
/// symlink where the runner writes). An existing directory's mode is changed only when it is the default place
/// (`owned_place`: made for this workflow) or empty without setgid: `--state .` in a project folder shared with a
/// group (2775) keeps its mode and setgid; its files are private (0600) all the same.
pub fn create(dir: &Path, owned_place: bool) -> std::io::Result<(PathBuf, Option<String>)> {
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
    let meta = std::fs::symlink_metadata(&dir)?;
    trusted(&meta)?;
    let mut warning = None;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o777 != 0o700 {
        let setgid = mode & 0o2000 != 0;
        let empty = std::fs::read_dir(&dir)?.next().is_none();
        if !existed || owned_place || (empty && !setgid) {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        } else {
            warning = Some(format!(
                "the state directory {} is shared (mode {mode:o}): it is left as it is, and its files are private (0600); a directory of its own is safer",
                dir.display()
            ));
        }
    }
    // A directory that exists but cannot be written is found now, not at the first run. The probe's name is
    // the process's own: two runners starting at once must not delete each other's.
    let probe = dir.join(format!(".flowrun-probe-{}", std::process::id()));
    private_file(&probe)?;
    std::fs::remove_file(probe)?;
    Ok((dir, warning))
}

/// The runner's user (its effective uid).
fn me() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// A directory the runner may trust with its writes: its user's, and not writable by everybody.
fn trusted(meta: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ))
    };
    if meta.uid() != me() {
        return refuse(format!(
            "it belongs to uid {}, not to this runner's user (uid {}): whoever owns it could make the runner write where they choose. Give a --state directory of your own",
            meta.uid(),
            me()
        ));
    }
    if meta.permissions().mode() & 0o002 != 0 {
        return refuse(
            "anybody may write in it (mode o+w): they could make the runner write where they choose. Give a --state directory of your own, or `chmod o-w` it".into(),
        );
    }
    Ok(())
}

/// Open (creating, mode 0600) a file of the state directory for reading and writing: never through a symlink,
/// only a regular file of the runner's user, made private (0600) if it was not. `O_NOFOLLOW` and the checks on the
/// open descriptor leave no window between the check and the use.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "{} is a symlink: the runner writes no file through one",
                    path.display()
                ),
            ),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.uid() != me() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a regular file of this runner's user: it is left alone",
                path.display()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// A folder under the state directory (the logs' `logs/JOB`): made 0700 when missing; one that is a symlink or
/// not the runner's user's is refused.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() || meta.uid() != me() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a folder of this runner's user (a symlink?): nothing is written there",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Whether `path` is a file pruning may delete: under `root` by its very words (no `..`, no symlink on the
/// way, checked without following one), a regular file of the runner's user. History rows are data: one naming
/// `/etc/passwd` must not make the runner delete it.
pub fn prunable(path: &Path, root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    if rest.as_os_str().is_empty()
        || rest
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return false;
    }
    // Nor a root that is a symlink itself (a planted `STATE/logs -> elsewhere`).
    if !std::fs::symlink_metadata(root).is_ok_and(|m| m.is_dir()) {
        return false;
    }
    // Every folder between the root and the file is a real folder, not a symlink out of it.
    let mut at = root.to_path_buf();
    let parts: Vec<_> = rest.components().collect();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            _ => return false,
        }
    }
    matches!(std::fs::symlink_metadata(path), Ok(m) if m.is_file() && m.uid() == me())
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

#[cfg(test)]
mod safety {
    use super::*;

    #[test]
    fn pruning_stays_under_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("logs");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::write(root.join("a/1.log"), "x").unwrap();
        let outside = dir.path().join("precious");
        std::fs::write(&outside, "x").unwrap();
        std::os::unix::fs::symlink(dir.path(), root.join("out")).unwrap();
        assert!(prunable(&root.join("a/1.log"), &root));
        assert!(!prunable(&outside, &root), "outside the root");
        assert!(!prunable(&root.join("a/../../precious"), &root), "`..`");
        assert!(
            !prunable(&root.join("out/precious"), &root),
            "through a symlink"
        );
        assert!(!prunable(&root.join("a"), &root), "a folder");
        assert!(!prunable(&root, &root), "the root itself");
        let linked = dir.path().join("linked");
        std::os::unix::fs::symlink(&root, &linked).unwrap();
        assert!(
            !prunable(&linked.join("a/1.log"), &linked),
            "a root that is a symlink"
        );
    }

    #[test]
    fn a_private_file_is_never_opened_through_a_symlink_and_is_made_0600() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("runner.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = private_file(&link).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        let open = dir.path().join("open");
        std::fs::write(&open, "").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&open).unwrap();
        let mode = std::fs::metadata(&open).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
