//! The command line's grammar, declared with clap's derive: one struct per subcommand, so an
//! option a command does not use is an error instead of being silently ignored.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::CONFIG_ENV;

/// `sparkrtc-gateway --version`: the version and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SPARKRTC_GATEWAY_COMMIT"), ")");

const TOP_EXAMPLES: &str = "\
Examples:
  sparkrtc-gateway check --config config/gateway.example.toml
  SPARKRTC_GATEWAY_CONFIG=/etc/sparkrtc-gateway/gateway.toml sparkrtc-gateway serve
  sparkrtc-gateway demo
  curl -X POST http://127.0.0.1:8080/v2/apps/demo-app/rooms/room-1/batch-remove-users \\
       -H 'Content-Type: application/json' -d '{\"user_ids\":[\"user001\"]}'

RUST_LOG overrides log.level.
Exit codes: 0 ok, 1 runtime failure, 2 usage error, 64 invalid configuration.";

const SERVE_EXAMPLES: &str = "\
Examples:
  sparkrtc-gateway serve --config /etc/sparkrtc-gateway/gateway.toml
  sparkrtc-gateway serve --config=gateway.toml --listen 0.0.0.0:8080
  SPARKRTC_GATEWAY_CONFIG=gateway.toml sparkrtc-gateway serve

Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the config and key files,
SIGUSR1 reopens the audit file.
Exit codes: 0 stopped after draining, 1 cannot start (bind, TLS files), 2 usage error,
64 invalid configuration.";

const CHECK_EXAMPLES: &str = "\
Examples:
  sparkrtc-gateway check --config config/gateway.example.toml
  SPARKRTC_GATEWAY_CONFIG=/etc/sparkrtc-gateway/gateway.toml sparkrtc-gateway check

Builds everything serve builds (TLS certificates and keys, CA files, key and credentials
files, the upstream client, the limiter) without binding a socket or touching the network,
and warns about temporary keys that have expired or expire soon.
Exit codes: 0 serve would start, 1 serve would fail to start (a TLS or CA file), 2 usage
error, 64 invalid configuration (every problem is listed).";

const SANDBOX_EXAMPLES: &str = "\
Examples:
  sparkrtc-gateway sandbox --config config/demo.toml
  sparkrtc-gateway sandbox --config=config/demo.toml --listen 127.0.0.1:18443 \\
      --tls-cert tests/data/certs/server.pem --tls-key tests/data/certs/server.key

Exit codes: 0 stopped, 1 cannot start, 2 usage error, 64 invalid configuration.";

const DEMO_EXAMPLES: &str = "\
Examples:
  sparkrtc-gateway demo
  sparkrtc-gateway demo --listen 127.0.0.1:8080

Exit codes: 0 stopped, 1 cannot start, 2 usage error.";

/// sparkrtc-gateway: call Huawei Cloud SparkRTC without holding its credentials.
#[derive(Debug, Parser)]
#[command(name = "sparkrtc-gateway", version = VERSION, after_help = TOP_EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Bind the proxy listener here instead of server.listen.
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
    /// Check a config file as serve would, print a summary, exit.
    #[command(after_help = CHECK_EXAMPLES)]
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Run a local SparkRTC stand-in that verifies signatures with the config's keys.
    #[command(after_help = SANDBOX_EXAMPLES)]
    Sandbox {
        #[command(flatten)]
        config: ConfigArg,
        /// Listen here (default 127.0.0.1:18443).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Serve HTTPS with this PEM certificate chain (with --tls-key).
        #[arg(long, value_name = "PEM", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, value_name = "PEM", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// Gateway and sandbox on loopback: send the example RemoveUsers call, keep serving for curl.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo {
        /// The gateway's address (default 127.0.0.1:8080; 127.0.0.1:0 takes any free port).
        #[arg(long, value_name = "ADDR")]
        listen: Option<SocketAddr>,
    },
}

/// `--config FILE`, `--config=FILE`, `-c FILE`, or the environment variable.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// The config file (TOML).
    #[arg(short = 'c', long = "config", value_name = "FILE", env = CONFIG_ENV)]
    pub path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }
}
