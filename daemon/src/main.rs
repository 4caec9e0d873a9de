//! `lanspreadd`: flags and environment, logging, signals; then
//! [`lanspreadd::run`].

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use lanspread_proto::model::RateLimits;
use lanspreadd::Config;
use lanspreadd::catalog::Catalog;
use lanspreadd::discovery::Zeroconf;
use lanspreadd::install::LibarchiveUnpacker;
use lanspreadd::runtime::PeerRuntimeConfig;
use lanspreadd::transport::{RateLimiters, TlsIdentity};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The lanspread daemon: finds peers on the LAN, shares and downloads
/// games, and answers clients on a local socket.
///
/// Every flag can also be set in the environment as LANSPREAD_<FLAG>
/// (for example LANSPREAD_GAME_DIR). Logs go to stderr, filtered by
/// RUST_LOG (default: info).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Settings file (TOML; keys are these flags without dashes). A flag
    /// or LANSPREAD_* variable wins over the file
    /// [default: /etc/lanspread/lanspreadd.toml, if it exists]
    #[arg(long, env = "LANSPREAD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Write the man page into DIR and exit (for packaging)
    #[arg(long, hide = true, value_name = "DIR")]
    generate_man: Option<PathBuf>,

    /// Directory holding one folder per game. May be set later with
    /// `lanspreadctl set-game-dir`; remembered in the state dir.
    #[arg(long, env = "LANSPREAD_GAME_DIR", value_name = "DIR")]
    game_dir: Option<PathBuf>,

    /// Where the daemon keeps its peer id, library index and download
    /// journal [default: $STATE_DIRECTORY, /var/lib/lanspread as root,
    /// else $XDG_STATE_HOME/lanspread]
    #[arg(long, env = "LANSPREAD_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,

    /// IPC socket path [default: $RUNTIME_DIRECTORY/lanspreadd.sock,
    /// /run/lanspread/lanspreadd.sock as root, else
    /// $XDG_RUNTIME_DIR/lanspread/lanspreadd.sock]
    #[arg(long, env = "LANSPREAD_SOCKET", value_name = "PATH")]
    socket: Option<PathBuf>,

    /// Catalog of known games (a JSON array of {"id", "name", …});
    /// replaces the bundled one.
    #[arg(long, env = "LANSPREAD_CATALOG", value_name = "FILE")]
    catalog: Option<PathBuf>,

    /// QUIC listen address for peers; port 0 lets the OS choose (mDNS
    /// announces the actual port).
    #[arg(
        long,
        env = "LANSPREAD_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:0"
    )]
    listen: std::net::SocketAddr,

    /// PEM certificate for the peer transport, replacing the compiled-in
    /// one (peers must use the same certificate). Needs --key.
    #[arg(long, env = "LANSPREAD_CERT", value_name = "FILE", requires = "key")]
    cert: Option<PathBuf>,

    /// PEM private key for --cert.
    #[arg(long, env = "LANSPREAD_KEY", value_name = "FILE", requires = "cert")]
    key: Option<PathBuf>,

    /// Name shown to peers and in status [default: the host name]
    #[arg(long, env = "LANSPREAD_NAME")]
    name: Option<String>,

    /// Members of this group get full access over the socket; other users
    /// are read-only. An empty value leaves only root and the daemon's user.
    #[arg(
        long,
        env = "LANSPREAD_OPERATOR_GROUP",
        value_name = "GROUP",
        default_value = "lanspread"
    )]
    operator_group: String,

    /// File mode of the socket, in octal (0666: anyone may connect and
    /// read; 0660: only the socket's group may connect).
    #[arg(long, env = "LANSPREAD_SOCKET_MODE", value_name = "MODE", value_parser = parse_mode, default_value = "0666")]
    socket_mode: u32,

    /// Log line format.
    #[arg(long, env = "LANSPREAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Most the daemon sends to all peers together: 10MiB (bytes per
    /// second), 80Mbit (bits per second), 0 for no limit. Changeable at run
    /// time with `lanspreadctl limits`.
    #[arg(long, env = "LANSPREAD_UPLOAD_LIMIT", value_name = "RATE", value_parser = parse_rate, default_value = "0")]
    upload_limit: u64,

    /// Most the daemon reads from all peers together, written like
    /// --upload-limit.
    #[arg(long, env = "LANSPREAD_DOWNLOAD_LIMIT", value_name = "RATE", value_parser = parse_rate, default_value = "0")]
    download_limit: u64,
}

fn parse_rate(text: &str) -> Result<u64, String> {
    lanspread_proto::model::parse_rate(text)
}

#[derive(Clone, Copy, Debug, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum LogFormat {
    Text,
    Json,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .map_err(|_| format!("{text:?} is not an octal file mode"))?;
    if mode > 0o777 {
        return Err(format!("{text:?} is not a file mode (at most 0777)"));
    }
    Ok(mode)
}

/// Default settings file, read when it exists.
const DEFAULT_CONFIG: &str = "/etc/lanspread/lanspreadd.toml";

/// The settings file: the same keys as the flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    game_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    catalog: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    operator_group: Option<String>,
    socket_mode: Option<String>,
    log_format: Option<LogFormat>,
    upload_limit: Option<String>,
    download_limit: Option<String>,
}

/// Flags and environment, then the settings file for whatever neither set.
fn parse_args() -> anyhow::Result<Args> {
    use clap::{CommandFactory, FromArgMatches, parser::ValueSource};
    let matches = Args::command().get_matches();
    let mut args = Args::from_arg_matches(&matches)?;
    let path = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()),
    };
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read settings file {}", path.display()))?;
    let file: FileConfig = toml::from_str(&text)
        .with_context(|| format!("invalid settings file {}", path.display()))?;
    let unset = |id: &str| {
        !matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    macro_rules! fill {
        ($field:ident) => {
            if unset(stringify!($field)) && file.$field.is_some() {
                args.$field = file.$field;
            }
        };
        ($field:ident, required) => {
            if unset(stringify!($field))
                && let Some(value) = file.$field
            {
                args.$field = value;
            }
        };
    }
    fill!(game_dir);
    fill!(state_dir);
    fill!(socket);
    fill!(catalog);
    fill!(name);
    fill!(cert);
    fill!(key);
    fill!(listen, required);
    fill!(operator_group, required);
    fill!(log_format, required);
    if unset("socket_mode")
        && let Some(mode) = &file.socket_mode
    {
        args.socket_mode = parse_mode(mode).map_err(|err| {
            anyhow::anyhow!(
                "invalid settings file {}: socket-mode: {err}",
                path.display()
            )
        })?;
    }
    for (key, file_value, value) in [
        ("upload-limit", &file.upload_limit, &mut args.upload_limit),
        (
            "download-limit",
            &file.download_limit,
            &mut args.download_limit,
        ),
    ] {
        if unset(&key.replace('-', "_"))
            && let Some(text) = file_value
        {
            *value = parse_rate(text).map_err(|err| {
                anyhow::anyhow!("invalid settings file {}: {key}: {err}", path.display())
            })?;
        }
    }
    if args.cert.is_some() != args.key.is_some() {
        anyhow::bail!(
            "cert and key must be set together (settings file {})",
            path.display()
        );
    }
    Ok(args)
}

/// Writes `lanspreadd.8` into `dir`.
fn generate_man(dir: &std::path::Path) -> anyhow::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command())
        .section("8")
        .render(&mut page)?;
    std::fs::write(dir.join("lanspreadd.8"), page)?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if let Some(dir) = &args.generate_man {
        return generate_man(dir);
    }
    init_logging(args.log_format);
    let config = resolve(args)?;
    let runtime = lanspreadd::main_runtime().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        lanspreadd::run(config, shutdown, lanspreadd::service::ready)
            .await
            .map_err(anyhow::Error::from)
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn resolve(args: Args) -> anyhow::Result<Config> {
    let catalog = match &args.catalog {
        Some(path) => Catalog::load(path)?,
        None => Catalog::bundled(),
    };
    let tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => TlsIdentity::load(cert, key)?,
        _ => TlsIdentity::compiled_in(),
    };
    let name = args.name.unwrap_or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "lanspread".into())
    });
    Ok(Config {
        game_dir: args.game_dir,
        state_dir: args.state_dir.unwrap_or_else(default_state_dir),
        socket: args
            .socket
            .unwrap_or_else(lanspread_proto::client::default_socket_path),
        socket_mode: args.socket_mode,
        catalog,
        name,
        operator_group: Some(args.operator_group).filter(|g| !g.is_empty()),
        peer_runtime: PeerRuntimeConfig {
            listen: args.listen,
            tls,
            discovery: Arc::new(Zeroconf),
            limits: RateLimiters::new(RateLimits {
                upload: args.upload_limit,
                download: args.download_limit,
            }),
        },
        unpacker: Arc::new(LibarchiveUnpacker),
        change_source: Arc::new(lanspreadd::monitor::NotifyWatcher),
    })
}

/// `$STATE_DIRECTORY` (systemd), `/var/lib/lanspread` as root, else
/// `$XDG_STATE_HOME/lanspread` (`~/.local/state/lanspread`).
fn default_state_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = env("STATE_DIRECTORY") {
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return PathBuf::from(first);
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/lanspread");
    }
    env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|home| PathBuf::from(home).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("lanspread")
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let which = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "shutting down");
    shutdown.cancel();
}
