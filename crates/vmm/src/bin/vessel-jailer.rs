//! vessel-jailer: runs one vessel-vmm in a jail (new mount, PID and network namespaces, a chroot
//! holding only the VM's files, cgroups with the VM's limits, an unprivileged uid and gid) and
//! cleans up when it ends; `--remove` cleans up after a jailer that was killed. See
//! `vessel_vmm::jail` for the steps.

use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use vessel_vmm::jail::{self, JailConfig, DEFAULT_CHROOT_BASE, DEFAULT_PARENT_CGROUP};

#[derive(Parser, Debug)]
#[command(
    name = "vessel-jailer",
    version,
    about = "Run vessel-vmm in a jail: namespaces, chroot, cgroups, no privileges",
    override_usage = "vessel-jailer --id ID --exec-file PATH --uid UID --gid GID [OPTIONS] -- [VMM ARGS]...\n       \
                      vessel-jailer --remove --id ID [--exec-name NAME] [--chroot-base DIR] [--parent-cgroup NAME]"
)]
struct Cli {
    /// The VM's id: names its directory and cgroups (letters, digits, '-', '_'; at most 64)
    #[arg(long)]
    id: String,
    /// The VMM binary, hard-linked (or copied) into the jail
    #[arg(long, value_name = "PATH", required_unless_present = "remove")]
    exec_file: Option<PathBuf>,
    /// The uid the VMM runs as
    #[arg(long, value_name = "UID", required_unless_present = "remove")]
    uid: Option<String>,
    /// The gid the VMM runs as
    #[arg(long, value_name = "GID", required_unless_present = "remove")]
    gid: Option<String>,
    /// Where jails are made: <DIR>/<exec file name>/<id>/root
    #[arg(long, value_name = "DIR", default_value = DEFAULT_CHROOT_BASE)]
    chroot_base: PathBuf,
    /// A cgroup limit, CONTROLLER.FILE=VALUE (repeatable), e.g. memory.limit_in_bytes=512M on
    /// cgroup v1, memory.max=512M on v2, pids.max=64
    #[arg(long = "cgroup", value_name = "KEY=VALUE")]
    cgroups: Vec<String>,
    /// The cgroup that holds one cgroup per jail, under each hierarchy's root
    #[arg(long, value_name = "NAME", default_value = DEFAULT_PARENT_CGROUP)]
    parent_cgroup: String,
    /// A network namespace to join (e.g. /var/run/netns/NAME); default: a new, empty one
    #[arg(long, value_name = "PATH")]
    netns: Option<PathBuf>,
    /// Detach from the terminal (new session, standard streams to /dev/null) once the inputs
    /// are checked
    #[arg(long)]
    daemonize: bool,
    /// Remove the jail's directory and cgroups (after its VM has ended) instead of starting one
    #[arg(long, conflicts_with_all = ["exec_file", "uid", "gid", "cgroups", "netns", "daemonize"])]
    remove: bool,
    /// With --remove: the exec file's name the jail was made for
    #[arg(long, value_name = "NAME", default_value = "vessel-vmm", requires = "remove")]
    exec_name: String,
    /// The VMM's arguments, paths as seen inside the jail
    #[arg(last = true, value_name = "VMM ARGS")]
    vmm_args: Vec<OsString>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("vessel-jailer: {}", first_line(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    if cli.remove {
        return match jail::remove(&cli.id, &cli.exec_name, &cli.chroot_base, &cli.parent_cgroup) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        };
    }
    let config = JailConfig {
        id: cli.id,
        exec_file: cli.exec_file.unwrap_or_default(),
        uid: cli.uid.unwrap_or_default(),
        gid: cli.gid.unwrap_or_default(),
        chroot_base: cli.chroot_base,
        cgroups: cli.cgroups,
        parent_cgroup: cli.parent_cgroup,
        netns: cli.netns,
        vmm_args: cli.vmm_args,
    };
    if cli.daemonize {
        // Inputs are checked while the caller can still see the error.
        if let Err(e) = jail::check(&config) {
            return fail(e);
        }
        if let Err(e) = jail::daemonize() {
            return fail(e);
        }
    }
    match jail::run(&config) {
        Ok(status) => ExitCode::from(status.clamp(0, 255) as u8),
        Err(e) => fail(e),
    }
}

fn fail(e: jail::JailError) -> ExitCode {
    eprintln!("vessel-jailer: {}", first_line(&e.to_string()));
    ExitCode::from(1)
}

/// clap's and the kernel's messages can span lines; a user gets one.
fn first_line(message: &str) -> String {
    let mut lines = message.lines();
    let mut first = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_owned();
    if first.ends_with(':') {
        let listed: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).map(str::trim).collect();
        first = format!("{first} {}", listed.join(", "));
    }
    first
}
