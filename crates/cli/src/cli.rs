//! The command line of `vessel`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "vessel", version, about = "vessel: isolated compute from OCI images")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Where images and containers live.
    #[arg(long, global = true, default_value = "/var/lib/vessel")]
    pub root: PathBuf,
    /// The container runtime's state directory.
    #[arg(long = "runtime-root", global = true, default_value = "/run/vessel/runtime")]
    pub runtime_root: PathBuf,
    /// Output: table (human) or json, for every command.
    #[arg(long, global = true, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
}

impl Global {
    pub fn json(&self) -> bool {
        self.format == "json"
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Remove the container (and its writable layer) when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open (the container's stdin is ours either way).
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set environment variables (KEY=VALUE).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Memory limit, e.g. 64m or 1g.
    #[arg(short, long)]
    pub memory: Option<String>,
    /// CPU limit as a number of CPUs, e.g. 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long = "pids-limit")]
    pub pids_limit: Option<i64>,
    /// User (name or uid) and optional group: USER[:GROUP].
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container name (default: a random id).
    #[arg(long)]
    pub name: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    pub image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in a new container from an image, in the foreground.
    Run(RunArgs),
    /// List containers.
    Ps {
        #[arg(short, long)]
        all: bool,
    },
    /// Remove containers.
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Pull an image from a registry.
    Pull {
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Push an image to a registry.
    Push {
        image: String,
        /// Where to push (default: the image's own name).
        destination: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List images.
    Images,
    /// Give an image another name.
    Tag(TagArgs),
    /// Write images to an archive (docker save format).
    Save(SaveArgs),
    /// Load images from an archive (docker save or OCI archive).
    Load(LoadArgs),
    /// Remove images.
    Rmi {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// How to reach a registry (`pull`, `push`).
#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Plain HTTP, or HTTPS without certificate verification.
    #[arg(long)]
    pub insecure: bool,
    /// CA certificate (PEM) to trust for the registry's TLS.
    #[arg(long = "ca-file")]
    pub ca_file: Option<PathBuf>,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
}

/// `tag` and `image tag`.
#[derive(Args, Debug)]
pub struct TagArgs {
    pub image: String,
    pub name: String,
}

/// `save` and `image save`.
#[derive(Args, Debug)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    #[arg(short, long)]
    pub output: PathBuf,
}

/// `load` and `image load`.
#[derive(Args, Debug)]
pub struct LoadArgs {
    #[arg(short, long)]
    pub input: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Show images' manifests and configs as JSON.
    Inspect {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove images.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove blobs and unpacked layers no image uses.
    Prune,
    /// Unpack an image's layers now (they are otherwise unpacked on first run).
    Unpack {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Give an image another name.
    Tag(TagArgs),
    /// Write images to an archive (docker save format).
    Save(SaveArgs),
    /// Load images from an archive (docker save or OCI archive).
    Load(LoadArgs),
    /// Make an image from a root filesystem directory or tarball.
    Import {
        source: PathBuf,
        name: String,
        /// Image config: CMD ["..."], ENTRYPOINT ["..."], ENV K=V, WORKDIR /d, USER u (Dockerfile syntax).
        #[arg(short, long)]
        change: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
