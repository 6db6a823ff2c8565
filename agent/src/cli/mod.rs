//! The `palisade` command line: argument parsing and dispatch only. Each command group
//! lives in its own file; the calicoctl-compatible resource commands (`create`, `apply`,
//! `replace`, `delete`, `get`) print calicoctl v1's messages on stdout, the seed-era
//! commands (`profile ... rule show`, `endpoint ... profile show`) print calicoctl v0.x's.

mod address_clash;
pub mod agent;
mod cleanup;
mod columns;
mod commit;
mod delete;
mod diff;
pub mod docker_plugin;
mod endpoint;
mod endpoint_lookup;
mod flows;
mod get;
mod get_output;
mod input;
mod matrix;
mod matrix_html;
mod pretty_table;
mod preview;
mod privileges;
mod profile;
mod reach_text;
mod resource_args;
mod rule_pprint;
mod selector_test;
mod sigpipe;
mod stats;
mod stop_signals;
mod store_access;
mod tabwriter;
pub mod trace;
mod version;
mod workload;
mod write;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

use crate::store::DEFAULT_DATASTORE_URL;

/// Calico v1-style network policy for containers, enforced by eBPF.
///
/// The resource commands (create, apply, replace, delete, get) read and print calicoctl v1
/// resources (`apiVersion: v1`) and print calicoctl's messages. Unlike calicoctl, every
/// command that writes is all or nothing: the whole input is parsed and validated first,
/// and all of its writes go to the datastore in one atomic commit.
#[derive(Debug, Parser)]
#[command(name = "palisade", version, propagate_version = true)]
pub struct Cli {
    /// The datastore: file:///path/to/dir (the embedded store) or
    /// etcd://HOST:PORT[,HOST:PORT...] (etcd, in Calico v1's key layout).
    #[arg(
        long,
        global = true,
        env = "PALISADE_DATASTORE",
        default_value = DEFAULT_DATASTORE_URL,
        value_name = "URL"
    )]
    pub datastore: String,

    /// etcd over TLS: the CA certificate (PEM) that signed etcd's server certificate.
    #[arg(long, global = true, env = "PALISADE_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<std::path::PathBuf>,

    /// etcd client-certificate authentication: this client's certificate (PEM); needs
    /// --etcd-key and --etcd-ca.
    #[arg(long, global = true, env = "PALISADE_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --etcd-cert.
    #[arg(long, global = true, env = "PALISADE_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Create(write::CreateArgs),
    Apply(write::ApplyArgs),
    Replace(write::ReplaceArgs),
    Delete(delete::DeleteArgs),
    Get(get::GetArgs),
    Profile(profile::ProfileArgs),
    Endpoint(endpoint::EndpointArgs),
    Selector(selector_test::SelectorArgs),
    /// Evaluate the stored policy for one packet with the reference evaluator.
    Trace(trace::TraceArgs),
    Diff(diff::DiffArgs),
    Matrix(matrix::MatrixArgs),
    /// Packets and bytes allowed and denied per endpoint, rule hits, drop reasons.
    Stats(stats::StatsArgs),
    Flows(flows::FlowsArgs),
    /// Run the node agent.
    Agent(agent::AgentArgs),
    DockerPlugin(docker_plugin::DockerPluginArgs),
    /// Plumb a workload's network namespace to the host, or undo it.
    Workload(workload::WorkloadArgs),
    Cleanup(cleanup::CleanupArgs),
    /// Print palisade's version.
    Version,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return report_parse_error(&err),
    };
    if !matches!(cli.command, Command::Agent(_)) {
        sigpipe::exit_quietly_on_closed_stdout();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("palisade: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    if let Err(code) = privileges::check(&cli.command) {
        return code;
    }
    let Some(url) = store_access::datastore_url(&cli) else {
        return ExitCode::FAILURE;
    };
    match cli.command {
        Command::Create(args) => write::create(args, &url).await,
        Command::Apply(args) => write::apply(args, &url).await,
        Command::Replace(args) => write::replace(args, &url).await,
        Command::Delete(args) => delete::run(args, &url).await,
        Command::Get(args) => get::run(args, &url).await,
        Command::Profile(args) => profile::run(args, &url).await,
        Command::Endpoint(args) => endpoint::run(args, &url).await,
        Command::Selector(args) => selector_test::run(args),
        Command::Trace(args) => match store_access::open_for_palisade(&url).await {
            Some(store) => trace::run(args, store).await,
            None => ExitCode::FAILURE,
        },
        Command::Diff(args) => diff::run(args, &url).await,
        Command::Matrix(args) => matrix::run(args, &url).await,
        Command::Stats(args) => stats::run(args, &url).await,
        Command::Flows(args) => flows::run(args, &url).await,
        Command::Agent(args) => agent::run(args, url).await,
        Command::DockerPlugin(args) => docker_plugin::run(args, &url).await,
        Command::Workload(args) => workload::run(args, &url).await,
        Command::Cleanup(args) => cleanup::run(args),
        Command::Version => version::run(),
    }
}

/// clap's help and version requests print as clap prints them; any other syntax error
/// gets calicoctl's one-line message on stdout, with clap's reason in it: one mistake,
/// one message.
fn report_parse_error(err: &clap::Error) -> ExitCode {
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Printing help can only fail if stdout is gone; nothing useful to do then.
            let _ = err.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            ExitCode::FAILURE
        }
        _ => {
            let args: Vec<String> = std::env::args().skip(1).collect();
            println!(
                "Invalid option: 'palisade {}': {}. Use flag '--help' to read about a specific subcommand.",
                args.join(" "),
                parse_error_reason(err)
            );
            ExitCode::FAILURE
        }
    }
}

/// clap's explanation without its usage lines, on one line.
fn parse_error_reason(err: &clap::Error) -> String {
    let text = err.render().to_string();
    let reason = text
        .split("\n\nUsage:")
        .next()
        .unwrap_or_default()
        .split("\n\nFor more information")
        .next()
        .unwrap_or_default();
    let words: Vec<&str> = reason
        .trim_start_matches("error: ")
        .split_whitespace()
        .collect();
    words.join(" ")
}
