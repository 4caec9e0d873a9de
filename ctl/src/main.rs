//! `lanspreadctl`: drives `lanspreadd` over its local socket.
//!
//! One file per subcommand under `cmd/`; this file parses flags, connects,
//! and maps failures to the exit codes of
//! `docs/design.md#command-line-contract`.

mod cmd;
mod format;

use cmd::operation::{Kind, run as operation};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lanspread_proto::client::{ClientError, IpcClient, default_socket_path};

/// Exit code: the daemon could not be reached.
const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the operation failed.
const EXIT_FAILED: u8 = 1;

/// Control lanspreadd, the lanspread daemon.
///
/// Exit codes: 0 success, 1 the operation failed, 2 usage error, 3 the
/// daemon is not reachable.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The daemon's socket [default: as lanspreadd chooses it]
    #[arg(long, global = true, env = "LANSPREAD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Print machine-readable JSON (the shapes are documented in docs/ipc.md)
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's identity, game directory and peer count
    Status,
    /// List the library: local games and games peers hold
    Games {
        /// Also list the folders of the game directory that are ignored,
        /// with the reason (not in the catalog, not a valid game id, …)
        #[arg(long)]
        all: bool,
    },
    /// List the peers this daemon knows
    Peers,
    /// Ask peers for a game's file list
    Get { id: String },
    /// Download a game from the peers that hold its latest version; waits
    /// for the outcome with progress (exit 0 only when it finished)
    Download {
        id: String,
        /// Return once the daemon accepted the download
        #[arg(long)]
        no_wait: bool,
    },
    /// Update a game to the latest version peers hold; waits like download.
    /// Chunks already in place on disk are not fetched; the summary says how
    /// many bytes were found on disk and how many were fetched
    Update {
        id: String,
        /// Return once the daemon accepted the download
        #[arg(long)]
        no_wait: bool,
    },
    /// Install a downloaded game
    Install { id: String },
    /// Uninstall a game (its archives stay)
    Uninstall { id: String },
    /// Cancel a running download
    Cancel { id: String },
    /// Rehash a downloaded game against the manifest its peers offer (or
    /// this host's own) and list every file that differs; exit 0 only when
    /// it is clean
    Verify {
        id: String,
        /// Fetch the bad chunks again from the peers (exit 0 when all were)
        #[arg(long)]
        repair: bool,
    },
    /// Set the game directory (relative paths are taken from here)
    SetGameDir { path: PathBuf },
    /// Follow the event stream, one JSON object a line, until interrupted
    Events,
    /// A live view of peers, downloads, installs and limits, refreshed
    /// from the event stream; q quits
    Top,
    /// Show the upload and download limits, or change them (operator only).
    /// A rate is written with its unit: 10MiB (bytes per second), 80Mbit
    /// (bits per second); 0 means no limit
    Limits {
        /// Most the daemon sends to all peers together
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        upload: Option<u64>,
        /// Most the daemon reads from all peers together
        #[arg(long, value_name = "RATE", value_parser = parse_rate)]
        download: Option<u64>,
    },
    /// Check what usually goes wrong (daemon, permissions, game directory,
    /// Avahi, mDNS, peers) and say how to fix it
    Doctor,
    /// Write shell completions and the man page into DIR (for packaging)
    #[command(hide = true)]
    GenerateAssets { dir: PathBuf },
}

fn parse_rate(text: &str) -> Result<u64, String> {
    lanspread_proto::model::parse_rate(text)
}

/// Output options every subcommand honours.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

/// A subcommand's failure.
#[derive(Debug)]
pub enum Failure {
    /// Talking to the daemon failed, or the daemon refused.
    Client(ClientError),
    /// Checked on this side before asking the daemon.
    Usage(String),
    /// The daemon accepted the operation, and it then failed.
    Operation(String),
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Self::Client(err)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::GenerateAssets { dir } = &cli.command {
        return match generate_assets(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!(
                    "lanspreadctl: cannot write assets to {}: {err}",
                    dir.display()
                );
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    let socket = cli.socket.clone().unwrap_or_else(default_socket_path);
    let output = Output { json: cli.json };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lanspreadctl: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(run(cli.command, &socket, output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("lanspreadctl: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Operation(message)) => {
            eprintln!("lanspreadctl: {message}");
            ExitCode::from(EXIT_FAILED)
        }
        Err(Failure::Client(err)) => report(&err, &socket),
    }
}

/// Shell completions (bash, zsh, fish) and the man page, from the clap
/// definitions, so they always agree with `--help`.
fn generate_assets(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    use clap_complete::Shell;
    std::fs::create_dir_all(dir)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "lanspreadctl", dir)?;
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    std::fs::write(dir.join("lanspreadctl.1"), page)
}

async fn run(command: Command, socket: &std::path::Path, output: Output) -> Result<(), Failure> {
    if let Command::Doctor = command {
        return cmd::doctor::run(socket, output).await;
    }
    let mut client = IpcClient::connect(socket).await?;
    match command {
        Command::Status => cmd::status::run(&mut client, output).await,
        Command::Games { all } => cmd::games::run(&mut client, output, all).await,
        Command::Peers => cmd::peers::run(&mut client, output).await,
        Command::SetGameDir { path } => cmd::set_game_dir::run(&mut client, output, &path).await,
        Command::Events => cmd::events::run(&mut client).await,
        Command::Top => cmd::top::run(&mut client, socket, output).await,
        Command::Limits { upload, download } => {
            cmd::limits::run(&mut client, output, upload, download).await
        }
        Command::Get { id } => operation(&mut client, socket, output, Kind::Get, &id, true).await,
        Command::Download { id, no_wait } => {
            operation(&mut client, socket, output, Kind::Download, &id, !no_wait).await
        }
        Command::Update { id, no_wait } => {
            operation(&mut client, socket, output, Kind::Update, &id, !no_wait).await
        }
        Command::Install { id } => {
            operation(&mut client, socket, output, Kind::Install, &id, true).await
        }
        Command::Uninstall { id } => {
            operation(&mut client, socket, output, Kind::Uninstall, &id, true).await
        }
        Command::Verify { id, repair } => {
            cmd::verify::run(&mut client, socket, output, &id, repair).await
        }
        Command::Cancel { id } => {
            operation(&mut client, socket, output, Kind::Cancel, &id, true).await
        }
        Command::Doctor | Command::GenerateAssets { .. } => unreachable!("handled above"),
    }
}

/// Prints `err` for people and returns the matching exit code.
fn report(err: &ClientError, socket: &std::path::Path) -> ExitCode {
    if err.is_unreachable() {
        let cause = std::error::Error::source(err)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        eprintln!(
            "lanspreadctl: cannot reach lanspreadd at {}{cause}\n  is the daemon running? choose another socket with --socket or LANSPREAD_SOCKET",
            socket.display()
        );
        return ExitCode::from(EXIT_UNREACHABLE);
    }
    match err.daemon_error() {
        Some(refusal) => eprintln!(
            "lanspreadctl: {} [{}]",
            refusal.message,
            refusal.code.as_str()
        ),
        None => {
            let mut text = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("lanspreadctl: {text}");
        }
    }
    ExitCode::from(EXIT_FAILED)
}
