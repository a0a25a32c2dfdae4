//! Running commands inside a named network namespace (`ip netns exec`), and
//! running commands with errors that name the command and carry its stderr.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};

/// A command that runs `program args...` inside the named network namespace
/// (`ip netns exec <ns> program args...`). Nothing is spawned yet.
pub fn exec_in<I, S>(ns: &str, program: impl AsRef<OsStr>, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program).args(args);
    cmd
}

/// Spawns `program args...` inside the named network namespace with stdin
/// closed, stdout piped and stderr piped; the caller reads (or drops) them.
pub fn spawn_in<I, S>(ns: &str, program: impl AsRef<OsStr>, args: I) -> Result<Child>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = exec_in(ns, program, args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn()
        .with_context(|| format!("failed to spawn `{}`", describe(&cmd)))
}

/// Runs a command to completion and returns its stdout; a non-zero exit is an
/// error naming the command and carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("failed to run `{}`", describe(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip <args>`, run to completion.
pub(crate) fn ip<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(Command::new("ip").args(args))
}

/// The command line, for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
