//! `vessel`: the user's command line. Instances, operations and the image commands that name images go
//! through vesseld's API (unix socket, or TLS); save, load, import and unpack use this host's image store.

mod cli;
mod client;
mod format;
mod images;
mod instances;
mod networks;
mod operations;
mod output;
mod session;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use vessel_runtime::logging;

use cli::{Cli, Command, ImageCommand, OperationCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            return match logging::clap_outcome(&e) {
                Ok(()) => ExitCode::SUCCESS,
                Err(usage) => {
                    eprint!("{}", usage.text);
                    ExitCode::from(2)
                }
            };
        }
    };
    match dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vessel: {}", logging::one_line(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

fn dispatch(cli: Cli) -> Result<u8> {
    let g = cli.global;
    let tls = client::TlsOptions {
        ca: g.tls_ca.clone(),
        cert: g.tls_cert.clone(),
        key: g.tls_key.clone(),
        token: g.token.clone(),
    };
    let client = || client::Client::new(&g.host, &tls);
    match cli.command {
        Command::Run(a) => return instances::run(&g, &client()?, a.detach, &a.create),
        Command::Create(a) => {
            let inst = instances::create(&client()?, &a)?;
            output::out(&inst.id);
        }
        Command::Start { attach, instances: n } => return instances::start(&client()?, attach, &n),
        Command::Stop { time, instances: n } => return instances::simple(&client()?, "stop", time, None, &n),
        Command::Restart { time, instances: n } => {
            return instances::simple(&client()?, "restart", time, None, &n)
        }
        Command::Kill { signal, instances: n } => {
            return instances::simple(&client()?, "kill", None, signal, &n)
        }
        Command::Pause { instances: n } => return instances::simple(&client()?, "pause", None, None, &n),
        Command::Unpause { instances: n } => return instances::simple(&client()?, "resume", None, None, &n),
        Command::Rm { force, instances: n } => return instances::rm(&client()?, force, &n),
        Command::Ps { all, quiet, filter } => return instances::ps(&g, &client()?, all, quiet, &filter),
        Command::Inspect { instances: n } => return instances::inspect(&g, &client()?, &n),
        Command::Exec(a) => return instances::exec(&client()?, &a),
        Command::Logs(a) => return instances::logs(&client()?, &a),
        Command::Stats {
            no_stream,
            instances: n,
        } => return instances::stats(&g, &client()?, no_stream, &n),
        Command::Top { instance } => return instances::top(&client()?, &instance),
        Command::Wait { instances: n } => return instances::wait(&client()?, &n),
        Command::Rename { instance, name } => return instances::rename(&client()?, &instance, &name),
        Command::Update(a) => return instances::update(&client()?, &a),
        Command::Events => return instances::events(&g, &client()?),
        Command::Info => return instances::info(&g, &client()?),
        Command::Version => return instances::version(&g, &client()?),
        Command::Daemon { args } => return daemon(&args),
        Command::Pull { reference, registry } => images::pull(&g, &client()?, &reference, &registry)?,
        Command::Push {
            image,
            destination,
            registry,
        } => images::push(&g, &client()?, &image, destination.as_deref(), &registry)?,
        Command::Images | Command::Image(ImageCommand::Ls) => images::list(&g, &client()?)?,
        Command::Rmi { force, images: names } | Command::Image(ImageCommand::Rm { force, images: names }) => {
            images::remove(&g, &client()?, force, &names)?
        }
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => {
            images::tag(&g, &client()?, &a.image, &a.name)?
        }
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => images::save(&g, &a.images, &a.output)?,
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => images::load(&g, &a.input)?,
        Command::Image(ImageCommand::Inspect { images: names }) => images::inspect(&client()?, &names)?,
        Command::Image(ImageCommand::Prune) => images::prune(&g, &client()?)?,
        Command::Operation(OperationCommand::Ls) => return operations::list(&g, &client()?),
        Command::Operation(OperationCommand::Show { id }) => return operations::show(&client()?, &id),
        Command::Operation(OperationCommand::Wait { id }) => return operations::wait_id(&client()?, &id),
        Command::Operation(OperationCommand::Cancel { id }) => return operations::cancel(&client()?, &id),
        Command::Network(cmd) => return networks::command(&g, &client()?, &cmd),
        Command::Port { instance } => return networks::port(&g, &client()?, &instance),
        Command::Image(ImageCommand::Unpack { images: names }) => images::unpack(&g, &names)?,
        Command::Image(ImageCommand::Import { source, name, change }) => {
            images::import(&g, &source, &name, &change)?
        }
    }
    Ok(0)
}

/// `vessel daemon ARGS`: exec vesseld (beside this binary, else on PATH) with ARGS.
fn daemon(args: &[String]) -> Result<u8> {
    use std::os::unix::process::CommandExt;
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("vesseld")))
        .filter(|p| p.exists());
    let exe = beside.unwrap_or_else(|| "vesseld".into());
    let err = std::process::Command::new(&exe).args(args).exec();
    Err(anyhow::anyhow!("Cannot run {}: {err}", exe.display()))
}
