//! vessel-vmm: boots one microVM from flags or a JSON config and runs it until the guest powers
//! off (exit 0), resets (exit 3) or fails (exit 1). Usage errors exit 2. With `--api-sock` it
//! also serves an HTTP API on a unix socket, and without a kernel or config it waits for the VM
//! to be configured and started through that API.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use vessel_vmm::config::{DiskConfig, NicConfig, SerialConfig, VmConfig, VsockConfig, DEFAULT_CMDLINE};
use vessel_vmm::launch;
use vessel_vmm::seccomp::ThreadKind;

#[derive(Parser, Debug)]
#[command(
    name = "vessel-vmm",
    version,
    about = "Boot a KVM microVM: one process per VM"
)]
struct Cli {
    /// A JSON VM config (fields: kernel, initrd, cmdline, cpus, memory_mib, disks, serial, console, rng)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["kernel", "initrd", "cmdline", "cpus", "memory", "disk", "serial", "console", "net", "vsock"])]
    config: Option<PathBuf>,
    /// Kernel: bzImage or ELF vmlinux (PVH entry used when present)
    #[arg(long, value_name = "PATH", required_unless_present_any = ["config", "restore", "api_sock"])]
    kernel: Option<PathBuf>,
    /// Initramfs
    #[arg(long, value_name = "PATH", requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line
    #[arg(long, value_name = "STR", default_value = DEFAULT_CMDLINE)]
    cmdline: String,
    /// vCPUs
    #[arg(long, value_name = "N", default_value_t = 1)]
    cpus: u16,
    /// Guest memory in MiB
    #[arg(long, value_name = "MiB", default_value_t = 128)]
    memory: u64,
    /// A raw disk image as virtio-blk (repeatable): PATH[,ro][,id=NAME]
    #[arg(long, value_name = "PATH[,ro]")]
    disk: Vec<DiskConfig>,
    /// COM1 console: stdio, none or file:PATH
    #[arg(long, value_name = "WHERE", default_value = "stdio")]
    serial: SerialConfig,
    /// A virtio-net NIC on a tap device (repeatable): tap=NAME[,mac=XX:XX:XX:XX:XX:XX]
    #[arg(long, value_name = "tap=NAME[,mac=MAC]")]
    net: Vec<NicConfig>,
    /// A virtio-vsock device, host side on a unix socket: cid=N,path=PATH
    #[arg(long, value_name = "cid=N,path=PATH")]
    vsock: Option<VsockConfig>,
    /// A virtio console (hvc0): stdio, none or file:PATH
    #[arg(long, value_name = "WHERE", default_value = "none")]
    console: SerialConfig,
    /// No virtio entropy device
    #[arg(long)]
    no_rng: bool,
    /// The kernel is built as a PVM guest (lets it boot when /dev/kvm is kvm-pvm)
    #[arg(long)]
    pvm_guest_kernel: bool,
    /// Resume the VM saved in this snapshot file (console per --serial)
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "kernel", "initrd", "cpus", "memory", "disk", "console", "net", "vsock"])]
    restore: Option<PathBuf>,
    /// Write "ready" and a newline to this inherited file descriptor once KVM is open
    #[arg(long, value_name = "FD")]
    ready_fd: Option<i32>,
    /// Serve the HTTP API on this unix socket; without --kernel or --config, the VM is then
    /// configured and started through it (the other flags give the defaults)
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// When the VM ends, write its devices' counters (notifications, interrupts, a NIC's frames
    /// and bytes) to this file as JSON, as GET /metrics shows them
    #[arg(long, value_name = "FILE")]
    metrics_path: Option<PathBuf>,
    /// Seccomp filters: each thread (main, API, vCPU, device) may make only the system calls its
    /// work needs; a forbidden call kills the VMM with SIGSYS
    #[arg(long, value_name = "on|off", default_value = "on", value_parser = on_off, action = clap::ArgAction::Set)]
    seccomp: bool,
}

fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}

impl Cli {
    fn into_config(self) -> Result<VmConfig, vessel_vmm::config::ConfigError> {
        let mut config = match self.config {
            Some(path) => VmConfig::from_file(&path)?,
            None => VmConfig {
                kernel: self.kernel.unwrap_or_default(),
                initrd: self.initrd,
                cmdline: self.cmdline,
                cpus: self.cpus,
                memory_mib: self.memory,
                disks: self.disk,
                serial: self.serial,
                console: self.console,
                nics: self.net,
                vsock: self.vsock,
                rng: !self.no_rng,
                pvm_guest_kernel: false,
            },
        };
        config.pvm_guest_kernel |= self.pvm_guest_kernel;
        config.rng &= !self.no_rng;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e
                .kind()
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| e.to_string());
            let message = e.to_string();
            let mut lines = message.lines();
            let mut first = lines
                .next()
                .unwrap_or(&text)
                .trim_start_matches("error: ")
                .to_owned();
            if first.ends_with(':') {
                // "required arguments were not provided:" lists them on the indented lines below.
                let listed: Vec<&str> = lines.take_while(|l| l.starts_with("  ")).map(str::trim).collect();
                first = format!("{first} {}", listed.join(", "));
            }
            eprintln!("vessel-vmm: {first}");
            return ExitCode::from(2);
        }
    };
    let ready_fd = cli.ready_fd;
    if cli.seccomp {
        // Before anything else: the main thread builds the VM under its filter, and every
        // thread it starts inherits the filter before adding its own.
        let filtered =
            vessel_vmm::seccomp::enable().and_then(|()| vessel_vmm::seccomp::install(ThreadKind::Vmm));
        if let Err(e) = filtered {
            eprintln!("vessel-vmm: {e}");
            return ExitCode::from(1);
        }
    }
    if let Some(path) = cli.metrics_path.clone() {
        if let Err(e) = vessel_vmm::vm::write_metrics_at_exit(path.clone()) {
            eprintln!("vessel-vmm: --metrics-path {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let Some(snapshot) = cli.restore.clone() {
        return report(restore(
            &snapshot,
            cli.serial.clone(),
            cli.api_sock.as_deref(),
            ready_fd,
        ));
    }
    let api_sock = cli.api_sock.clone();
    let boot_now = cli.kernel.is_some() || cli.config.is_some();
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vessel-vmm: {e}");
            return ExitCode::from(2);
        }
    };
    report(match api_sock {
        Some(socket) => vessel_vmm::api::run(&socket, config, boot_now, || signal_ready(ready_fd))
            .map_err(|e| e.to_string()),
        None => launch::run_with(&config, || signal_ready(ready_fd)).map_err(|e| e.to_string()),
    })
}

/// Tells whoever passed `--ready-fd` that the VMM is up; a closed pipe is their business.
fn signal_ready(fd: Option<i32>) {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    if let Some(fd) = fd.filter(|&fd| fd > 2) {
        // SAFETY: the caller handed this descriptor to us for this one write; it is owned here
        // from now on and closed when the File drops.
        let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
        let _ = pipe.write_all(b"ready\n");
    }
}

/// Restores a snapshot and runs it to its end, behind the API when a socket is given.
fn restore(
    snapshot: &std::path::Path,
    serial: SerialConfig,
    api_sock: Option<&std::path::Path>,
    ready_fd: Option<i32>,
) -> Result<vessel_vmm::exit::VmExit, String> {
    let vm = vessel_vmm::snapshot::restore(snapshot, serial).map_err(|e| e.to_string())?;
    match api_sock {
        Some(socket) => {
            let config = vm.config().cloned().ok_or("the snapshot holds no VM config")?;
            let start = vessel_vmm::api::Start::Restored(Box::new(vm));
            vessel_vmm::api::serve_vm(socket, config, start, || signal_ready(ready_fd))
                .map_err(|e| e.to_string())
        }
        None => {
            signal_ready(ready_fd);
            vm.run().map_err(|e| e.to_string())
        }
    }
}

/// The guest's verdict as the exit status, with one line on stderr.
fn report(result: Result<vessel_vmm::exit::VmExit, String>) -> ExitCode {
    match result {
        Ok(exit) => {
            eprintln!("vessel-vmm: {exit}");
            ExitCode::from(exit.status() as u8)
        }
        Err(e) => {
            eprintln!("vessel-vmm: {e}");
            ExitCode::from(1)
        }
    }
}
