//! `vessel-agent`: as PID 1, a VM instance's init (see `vessel_agent::init`); otherwise
//! `vessel-agent --listen unix:PATH|vsock:PORT` serves sessions beside whatever else runs (an image's own
//! init, or a host in tests).

use std::process::ExitCode;

use vessel_agent::server::{self, Listen, OnMainExit};

const USAGE: &str = "usage: vessel-agent --listen unix:PATH|vsock:PORT (as PID 1 it is a VM's init)";

fn main() -> ExitCode {
    if std::process::id() == 1 {
        vessel_agent::init::run_as_init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [flag, value] if flag == "--listen" => value.parse::<Listen>(),
        [flag] if flag == "--help" || flag == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(USAGE.to_string()),
    };
    let listen = match listen {
        Ok(l) => l,
        Err(e) => {
            eprintln!("vessel-agent: {e}");
            return ExitCode::from(2);
        }
    };
    // Beside another init the agent only serves: setup requests configure nothing of a host it does not own.
    let setup = match listen {
        Listen::Vsock(_) => vessel_agent::init::apply_setup,
        Listen::Unix(_) => no_setup,
    };
    match server::serve(&listen, OnMainExit::Continue, setup) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vessel-agent: cannot listen on {listen:?}: {e}");
            ExitCode::from(1)
        }
    }
}

fn no_setup(_: &vessel_agent::proto::GuestSetup) -> Result<(), String> {
    Ok(())
}
