//! imgedge command line: `serve` (default), `check-config`, `sign`, `usage`, `hash-token`,
//! `placeholder-sample`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use imgedge::{config, server, signature, usage};

#[derive(Parser)]
#[command(name = "imgedge", version, about = "Multi-tenant image-transformation CDN origin")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for `serve`, the default command).
    #[arg(short, long, global = true, default_value = "conf/imgedge.yaml")]
    conf: PathBuf,
    /// Run in the background (pingora daemon mode).
    #[arg(short, long)]
    daemon: bool,
    /// Take over the listeners of a running instance (graceful upgrade).
    #[arg(short, long)]
    upgrade: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (default).
    Serve,
    /// Validate the config file and exit: prints every problem with its YAML path.
    CheckConfig,
    /// Print a signed URL for a tenant, e.g. `sign --tenant demo rs:fit:300:0/plain/cups.jpg@webp`.
    Sign {
        #[arg(long)]
        tenant: String,
        /// Add `exp:` so the URL stops working after this many seconds.
        #[arg(long)]
        expires_in: Option<u64>,
        /// Options and source, e.g. `rs:fill:400:300/plain/photo.jpg@webp`.
        path: String,
    },
    /// Print the SHA-256 of a token read from standard input (one line), for a tenant's
    /// `usage_token_sha256`.
    HashToken,
    /// Write the pixels `/info`'s colours and ThumbHash are computed from (the image
    /// oriented, in sRGB, fitted into 100x100), or with `--side 32` those of the BlurHash,
    /// to standard output: a line `width height`, then width*height RGBA bytes. For
    /// scripts/placeholder-refs.sh.
    PlaceholderSample {
        /// An image file.
        file: PathBuf,
        /// Fit the 100x100 sample further into this square (the BlurHash's 32).
        #[arg(long)]
        side: Option<u32>,
    },
    /// Print the usage ledger's totals per month and tenant (PostgreSQL if configured,
    /// else the SQLite spool).
    Usage {
        #[arg(long)]
        tenant: Option<String>,
        /// A UTC calendar month, `YYYY-MM`.
        #[arg(long)]
        month: Option<String>,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imgedge: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    if let Command::HashToken = command {
        // needs no config: run where the token is made
        let mut token = String::new();
        std::io::stdin().read_line(&mut token)?;
        let token = token.trim_end_matches(['\r', '\n']);
        if token.len() < 16 {
            bail!("a token must be at least 16 characters");
        }
        println!("{}", imgedge::ops::token_sha256_hex(token));
        return Ok(());
    }
    if let Command::PlaceholderSample { file, side } = &command {
        use std::io::Write;
        let input = std::fs::read(file).with_context(|| file.display().to_string())?;
        let mut s = imgedge_core::transform::colors::Sample::from_source(&input, u64::MAX)?;
        if let Some(side) = side {
            s = s.fit(*side)?;
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "{} {}", s.width, s.height)?;
        out.write_all(&s.rgba)?;
        return Ok(());
    }
    // A server reads its file again on reload and upgrade, after pingora's daemon mode has
    // left the working directory: it keeps the absolute path (and so do the relative paths
    // inside, which are relative to the file).
    let file = match command {
        Command::Serve => std::fs::canonicalize(&cli.conf).unwrap_or_else(|_| cli.conf.clone()),
        _ => cli.conf.clone(),
    };
    let config = config::load(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
    match command {
        Command::CheckConfig => {
            server::check(&config).map_err(anyhow::Error::msg)?;
            println!("{}: OK ({} tenants)", cli.conf.display(), config.tenants.len());
            Ok(())
        }
        Command::Sign { tenant, expires_in, path } => {
            let t = config.tenants.iter().find(|t| t.id == tenant).with_context(|| format!("no tenant {tenant:?}"))?;
            let mut path = path.trim_start_matches('/').to_owned();
            if let Some(secs) = expires_in {
                let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
                path = format!("exp:{}/{path}", now + secs);
            }
            let path = format!("/{path}");
            let sig = match t.keys.first() {
                Some(pair) => signature::sign(pair, &path, t.signature_size),
                None if t.allow_unsigned => "unsafe".to_owned(),
                None => bail!("tenant {tenant:?} has no keys"),
            };
            let host = t.hosts.first().context("tenant has no host")?;
            let port = config.listen.edge.first().and_then(|a| a.rsplit(':').next()).unwrap_or("80");
            println!("http://{host}:{port}/{sig}{path}");
            Ok(())
        }
        Command::Usage { tenant, month, json } => {
            let out = usage::report::report(&config.usage, tenant.as_deref(), month.as_deref(), json)
                .map_err(anyhow::Error::msg)?;
            print!("{out}");
            Ok(())
        }
        Command::HashToken | Command::PlaceholderSample { .. } => Ok(()),
        Command::Serve => {
            init_logging();
            server::run(config, cli.daemon, cli.upgrade).map_err(anyhow::Error::msg)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IMGEDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("IMGEDGE_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
