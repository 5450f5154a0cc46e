//! The final step: find the program on the container's PATH and exec it with the configured environment.

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("No process arguments: process.args is empty")]
    NoArgs,
    #[error("Executable {0:?} not found in $PATH")]
    NotFound(String),
    #[error("Argument or environment string contains a NUL byte")]
    Nul,
    #[error("Cannot execute {path}: {source}")]
    Exec { path: PathBuf, source: nix::Error },
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Resolve args[0] as execvp would, using the PATH of the process's own environment.
pub fn find_program(arg0: &str, env: &[String]) -> Result<PathBuf, ExecError> {
    if arg0.contains('/') {
        return Ok(PathBuf::from(arg0));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(arg0))
        .find(|p| is_executable(p))
        .ok_or_else(|| ExecError::NotFound(arg0.to_string()))
}

fn cstrings<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(items: I) -> Result<Vec<CString>, ExecError> {
    items
        .into_iter()
        .map(|s| CString::new(s.as_ref().as_bytes()).map_err(|_| ExecError::Nul))
        .collect()
}

/// Prepared exec: everything converted before the last privileged steps so nothing allocates-and-fails late.
pub struct Program {
    path: CString,
    display: PathBuf,
    args: Vec<CString>,
    env: Vec<CString>,
}

impl Program {
    pub fn new(path: PathBuf, args: &[String], env: &[String]) -> Result<Program, ExecError> {
        if args.is_empty() {
            return Err(ExecError::NoArgs);
        }
        Ok(Program {
            path: CString::new(path.as_os_str().as_bytes()).map_err(|_| ExecError::Nul)?,
            display: path,
            args: cstrings(args)?,
            env: cstrings(env)?,
        })
    }

    pub fn exec(&self) -> ExecError {
        match nix::unistd::execve(&self.path, &self.args, &self.env) {
            Err(source) => ExecError::Exec {
                path: self.display.clone(),
                source,
            },
            Ok(never) => match never {},
        }
    }
}
