//! `vessel`: the user's command line. Today: images (pull, push, import, save/load, tag, inspect, rm, prune)
//! and `vessel run` of a container from an image; microVMs and the daemon come later.

mod cli;
mod containers;
mod images;
mod output;
mod run;

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use vessel_runtime::logging;

use cli::{Cli, Command, ImageCommand};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            return match logging::clap_outcome(&e) {
                Ok(()) => ExitCode::SUCCESS,
                Err(line) => {
                    eprintln!("vessel: {line}");
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
    match cli.command {
        Command::Run(a) => return run::run(&g, a),
        Command::Ps { all } => containers::ps(&g, all)?,
        Command::Rm { force, ids } => containers::rm(&g, force, &ids)?,
        Command::Pull { reference, registry } => images::pull(&g, &reference, &registry)?,
        Command::Push {
            image,
            destination,
            registry,
        } => images::push(&g, &image, destination.as_deref(), &registry)?,
        Command::Images => images::list(&g)?,
        Command::Rmi { images: names } => images::remove(&g, &names)?,
        Command::Tag(a) | Command::Image(ImageCommand::Tag(a)) => images::tag(&g, &a.image, &a.name)?,
        Command::Save(a) | Command::Image(ImageCommand::Save(a)) => images::save(&g, &a.images, &a.output)?,
        Command::Load(a) | Command::Image(ImageCommand::Load(a)) => images::load(&g, &a.input)?,
        Command::Image(ImageCommand::Ls) => images::list(&g)?,
        Command::Image(ImageCommand::Inspect { images: names }) => images::inspect(&g, &names)?,
        Command::Image(ImageCommand::Rm { images: names }) => images::remove(&g, &names)?,
        Command::Image(ImageCommand::Prune) => images::prune(&g)?,
        Command::Image(ImageCommand::Unpack { images: names }) => images::unpack(&g, &names)?,
        Command::Image(ImageCommand::Import { source, name, change }) => {
            images::import(&g, &source, &name, &change)?
        }
    }
    Ok(0)
}
