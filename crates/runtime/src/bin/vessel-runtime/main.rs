//! `vessel-runtime`: a runc-compatible OCI runtime over the vessel container engine.

mod cli;
mod exec_args;
mod templates;
mod update_args;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use vessel_runtime::container::{self, CreateOptions, Runtime};
use vessel_runtime::{logging, sealed_exe};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let usage = match logging::clap_outcome(&e) {
                Ok(()) => return ExitCode::SUCCESS,
                Err(u) => u,
            };
            // Logged like any other error, so the --log file is found by hand (clap could not parse it);
            // people get clap's whole message.
            let (file, format) = log_flags_from_argv();
            logging::init(file, format);
            logging::error_to_log_file(&usage.line);
            eprint!("{}", usage.text);
            return ExitCode::from(1);
        }
    };
    let format = if cli.log_format == "json" {
        logging::Format::Json
    } else {
        logging::Format::Text
    };
    logging::init(cli.log.clone(), format);
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            logging::error(&logging::one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// `--log FILE` / `--log=FILE` and `--log-format F`, read straight from argv.
fn log_flags_from_argv() -> (Option<std::path::PathBuf>, logging::Format) {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(str::to_string)
                .or_else(|| (a == name).then(|| args.get(i + 1).cloned()).flatten())
        })
    };
    let format = if value("--log-format").as_deref() == Some("json") {
        logging::Format::Json
    } else {
        logging::Format::Text
    };
    (value("--log").map(Into::into), format)
}

fn dispatch(cli: Cli) -> Result<u8> {
    if cli.version {
        println!(
            "vessel-runtime version {}\nspec: {}",
            env!("CARGO_PKG_VERSION"),
            vessel_runtime::spec::OCI_VERSION
        );
        return Ok(0);
    }
    if !matches!(cli.log_format.as_str(), "text" | "json") {
        return Err(anyhow!(
            "Unknown --log-format {:?}: use text or json",
            cli.log_format
        ));
    }
    let rt = Runtime::new(cli.root.clone(), cli.systemd_cgroup);
    let Some(command) = cli.command else {
        return Err(anyhow!("No command given: see vessel-runtime --help"));
    };
    if matches!(
        command,
        Command::Create(_) | Command::Run { .. } | Command::Exec(_)
    ) {
        // These put a process of ours into a container: see sealed_exe for why and how.
        sealed_exe::make_undumpable();
        sealed_exe::reexec_sealed()?;
    }
    match command {
        Command::Create(a) => {
            container::create(&rt, &create_options(&a))?;
        }
        Command::Start { id } => container::start(&rt, &id)?,
        Command::Run { create, detach, keep } => {
            let opts = container::RunOptions {
                create: create_options(&create),
                detach,
                keep,
            };
            return Ok(container::run(&rt, &opts)? as u8);
        }
        Command::State { id } => {
            let state = container::state(&rt, &id)?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        Command::Kill { id, signal, all } => {
            let sig = container::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            container::kill(&rt, &id, sig, all)?;
        }
        Command::Delete { force, id } => container::delete(&rt, &id, force)?,
        Command::Exec(a) => return exec_args::exec(&rt, a),
        Command::Ps { format, id, .. } => ps(&rt, &format, &id)?,
        Command::List { format, quiet } => list(&rt, &format, quiet)?,
        Command::Pause { id } => container::pause(&rt, &id)?,
        Command::Resume { id } => container::resume(&rt, &id)?,
        Command::Events { stats, interval, id } => events(&rt, stats, &interval, &id)?,
        Command::Update(a) => update_args::update(&rt, a)?,
        Command::Spec { bundle } => templates::write_spec(&bundle)?,
        Command::Features => println!("{}", serde_json::to_string_pretty(&templates::features())?),
    }
    Ok(0)
}

fn create_options(a: &cli::CreateArgs) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

fn ps(rt: &Runtime, format: &str, id: &str) -> Result<()> {
    let pids = container::ps_pids(rt, id)?;
    match format {
        "json" => println!("{}", serde_json::to_string(&pids)?),
        "table" => {
            println!("PID\tCMD");
            for pid in pids {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd: String = String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .trim()
                    .to_string();
                println!("{pid}\t{cmd}");
            }
        }
        other => return Err(anyhow!("Unknown format {other:?}: use table or json")),
    }
    Ok(())
}

fn list(rt: &Runtime, format: &str, quiet: bool) -> Result<()> {
    let all = container::list(rt)?;
    if quiet {
        for c in &all {
            println!("{}", c.id);
        }
        return Ok(());
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&all)?),
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} {:<32} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for c in &all {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {:<32} {}",
                    c.id, c.pid, c.status, c.bundle, c.created, c.owner
                );
            }
        }
        other => return Err(anyhow!("Unknown format {other:?}: use table or json")),
    }
    Ok(())
}

/// `5s`, `500ms`, `1m` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration> {
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = num.parse().with_context(|| format!("Invalid interval {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(anyhow!("Invalid interval {s:?}: use ms, s or m")),
    };
    if secs <= 0.0 {
        return Err(anyhow!("Invalid interval {s:?}: it must be positive"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| anyhow!("Invalid interval {s:?}: too long"))
}

fn events(rt: &Runtime, once: bool, interval: &str, id: &str) -> Result<()> {
    let every = parse_duration(interval)?;
    loop {
        let data = match container::stats(rt, id) {
            Ok(d) => d,
            // The container stopped while we were watching: that ends the stream.
            Err(_)
                if !once
                    && container::state(rt, id)
                        .map(|s| s["status"] == "stopped")
                        .unwrap_or(true) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e.into()),
        };
        println!(
            "{}",
            serde_json::json!({ "type": "stats", "id": id, "data": data })
        );
        if once {
            return Ok(());
        }
        std::thread::sleep(every);
    }
}
