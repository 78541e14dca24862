//! `keel gateway start`: etcd's plain TCP gateway, served by
//! `keel_proxy::gateway`. Only the command line, logging, runtime and
//! signals live here.

use std::process::ExitCode;

use keel_proxy::gateway::{gateway_usage, parse_gateway, Gateway, GatewayCommand, GatewayConfig};
use keel_proxy::ConfigError;

const GROUP_HELP: &str = "gateway related command

Usage:
  keel gateway [command]

Available Commands:
  start       start the gateway

Flags:
  -h, --help   help for gateway

Use \"keel gateway [command] --help\" for more information about a command.
";

/// Runs `keel gateway <args>`; `args` excludes `gateway`.
pub(crate) fn main(args: &[String]) -> ExitCode {
    if args.first().map(String::as_str) != Some("start") {
        print!("{GROUP_HELP}");
        return ExitCode::SUCCESS;
    }
    let config = match parse_gateway(&args[1..]) {
        Ok(GatewayCommand::Start(config)) => *config,
        Ok(GatewayCommand::Help) => {
            print!("start the gateway\n\n{}", gateway_usage());
            return ExitCode::SUCCESS;
        }
        Err(ConfigError::Syntax(message)) => {
            eprintln!("Error: {message}\n{}", gateway_usage());
            return ExitCode::FAILURE;
        }
        Err(err) => {
            eprintln!("Error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,h2=warn,hyper=warn,tower=warn"));
    let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter).try_init();
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // etcd prints its start-up refusals bare, on stderr.
            eprintln!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let gateway = Gateway::bind(config).await?;
        gateway
            .serve(async {
                let signal = crate::shutdown_signal().await;
                tracing::info!(signal, "shutting down the gateway");
            })
            .await?;
        Ok(())
    })
}
