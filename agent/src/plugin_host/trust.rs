//! Whether a plugin file may be opened: a plugin runs inside the agent, as
//! root, so whoever can write the file (or swap it, or a symlink on the way
//! to it) owns the host. Checked before `dlopen`, which already runs the
//! library's initialisers (docs/adr/008-plugin-compatibility-and-file-trust.md).
//!
//! The rule: the file, and the directory that contains it, are owned by root
//! or by the agent's effective user and are not writable by group or others.
//! A symlink is followed one step at a time; the directory holding each link
//! is checked the same way (whoever can write it can point the link
//! elsewhere), and so is whatever the link points to. The override
//! (`--allow-unsafe-plugin-files`) skips all of it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{ffi, PluginError};

/// The flag, config key and environment variable that turn the check off.
pub const OVERRIDE: &str = "--allow-unsafe-plugin-files (config `allow_unsafe_plugin_files = true`, environment VNT_ALLOW_UNSAFE_PLUGIN_FILES=true)";

/// How many symlinks are followed before giving up (as the kernel's ELOOP).
const MAX_LINKS: usize = 40;

/// Whether plugin files are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// Only safe files are opened (the default).
    #[default]
    SafeFilesOnly,
    /// Any file is opened: the operator said so.
    AllowUnsafe,
}

/// Check `path` (see the module docs). The error says which path, why, and
/// how to fix or override.
pub fn check(path: &Path, trust: Trust) -> Result<(), PluginError> {
    if trust == Trust::AllowUnsafe {
        return Ok(());
    }
    let euid = ffi::effective_uid();
    let refuse = |what: &Path, why: String| PluginError::Unsafe {
        path: path.display().to_string(),
        reason: format!("{} {why}", what.display()),
        fix: format!("`chown root {p}; chmod go-w {p}`", p = what.display()),
        euid,
    };
    let mut at: PathBuf = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let dir = match at.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let meta = std::fs::symlink_metadata(&at)
            .map_err(|e| refuse(&at, format!("cannot be inspected: {e}")))?;
        check_one(&meta, euid, "file").map_err(|why| refuse(&at, why))?;
        let dir_meta = std::fs::metadata(&dir)
            .map_err(|e| refuse(&dir, format!("cannot be inspected: {e}")))?;
        check_one(&dir_meta, euid, "directory").map_err(|why| refuse(&dir, why))?;
        if !meta.file_type().is_symlink() {
            return Ok(());
        }
        let target =
            std::fs::read_link(&at).map_err(|e| refuse(&at, format!("cannot be read: {e}")))?;
        at = dir.join(target);
    }
    Err(refuse(
        path,
        format!("goes through more than {MAX_LINKS} symlinks"),
    ))
}

/// One file or directory (a symlink's own mode means nothing: only its owner).
fn check_one(meta: &std::fs::Metadata, euid: u32, kind: &str) -> Result<(), String> {
    let uid = meta.uid();
    let mode = meta.mode() & 0o7777;
    let kind = if meta.file_type().is_symlink() {
        "symlink"
    } else {
        kind
    };
    if uid != 0 && uid != euid {
        return Err(format!(
            "is a {kind} owned by uid {uid} (mode {mode:04o}), neither root nor the agent's user (uid {euid})"
        ));
    }
    if !meta.file_type().is_symlink() && mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Err(format!(
            "is a {kind} writable by {who} (mode {mode:04o}, owner uid {uid})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn safe_file_passes_and_writable_ones_are_refused() {
        let dir = crate::testing::TempDir::new();
        chmod(dir.path(), 0o755);
        let f = dir.path().join("libvnt_plugin_x.so");
        std::fs::write(&f, b"").unwrap();
        chmod(&f, 0o644);
        check(&f, Trust::SafeFilesOnly).unwrap();

        chmod(&f, 0o664);
        let err = check(&f, Trust::SafeFilesOnly).unwrap_err().to_string();
        assert!(err.contains("writable by its group (mode 0664"), "{err}");
        assert!(err.contains("--allow-unsafe-plugin-files"), "{err}");
        check(&f, Trust::AllowUnsafe).unwrap();

        chmod(&f, 0o644);
        chmod(dir.path(), 0o777);
        let err = check(&f, Trust::SafeFilesOnly).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{} is a directory writable by group and others",
                dir.path().display()
            )),
            "{err}"
        );
        chmod(dir.path(), 0o755);
    }

    #[test]
    fn a_symlink_to_a_writable_file_is_refused_naming_the_target() {
        let dir = crate::testing::TempDir::new();
        chmod(dir.path(), 0o755);
        let target = dir.path().join("real.so");
        std::fs::write(&target, b"").unwrap();
        chmod(&target, 0o646);
        let link = dir.path().join("libvnt_plugin_x.so");
        std::os::unix::fs::symlink("real.so", &link).unwrap();
        let err = check(&link, Trust::SafeFilesOnly).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "{} is a file writable by others",
                target.display()
            )),
            "{err}"
        );
        chmod(&target, 0o644);
        check(&link, Trust::SafeFilesOnly).unwrap();
    }
}
