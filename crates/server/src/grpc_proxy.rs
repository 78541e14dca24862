//! `keel grpc-proxy start`: etcd's gRPC proxy subcommand, served by
//! `keel-proxy`. Only the command line, logging, runtime and signals live
//! here.

use std::process::ExitCode;

use keel_proxy::{Command, ConfigError, Proxy, ProxyConfig};

const GROUP_HELP: &str = "grpc-proxy related command

Usage:
  keel grpc-proxy [command]

Available Commands:
  start       start the grpc proxy

Flags:
  -h, --help   help for grpc-proxy

Use \"keel grpc-proxy [command] --help\" for more information about a command.
";

/// Runs `keel grpc-proxy <args>`; `args` excludes `grpc-proxy`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("start") => {}
        // cobra prints a command group's help for anything but one of its
        // commands.
        _ => {
            print!("{GROUP_HELP}");
            return ExitCode::SUCCESS;
        }
    }
    let config = match keel_proxy::parse(&args[1..]) {
        Ok(Command::Start(config)) => *config,
        Ok(Command::Help) => {
            print!("start the grpc proxy\n\n{}", keel_proxy::usage());
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Syntax(message)) => {
            eprintln!("Error: {message}\n{}", keel_proxy::usage());
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("Error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let level = if config.debug { "debug" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},h2=warn,hyper=warn,tower=warn")));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: ProxyConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let proxy = Proxy::bind(config).await?;
        proxy
            .serve(async {
                let signal = crate::shutdown_signal().await;
                tracing::info!(signal, "shutting down the gRPC proxy");
            })
            .await?;
        Ok(())
    })
}
