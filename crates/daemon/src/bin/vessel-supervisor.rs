//! vessel-supervisor: see `vessel_daemon::supervisor`.

fn main() {
    std::process::exit(vessel_daemon::supervisor::main());
}
