use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use workerpool_operator::controller::run::{RunConfig, run};
use workerpool_operator::{api, diagnose, render};

#[derive(Parser)]
#[command(
    name = "workerpool-operator",
    version,
    about = "Kubernetes operator for pools of Python app-server workers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (kubeconfig or in-cluster config).
    Run(RunArgs),
    /// Print the WorkerPool CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would apply for a pool on first apply.
    Render {
        /// WorkerPool manifest (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Classify the worker aborts of a Pod or PodList (`kubectl get pod -o json`).
    Diagnose {
        /// Pod or PodList as JSON or YAML; `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// EventList (`kubectl get events -o json`) with the kubelet's probe and kill Events.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Runtime for pods without the `workerpool.dev/runtime` annotation.
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<api::Runtime>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: OutputFormat,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

fn parse_runtime(text: &str) -> Result<api::Runtime, String> {
    text.parse()
}

fn run_diagnose(
    file: &PathBuf,
    events: Option<&PathBuf>,
    runtime: Option<api::Runtime>,
    output: OutputFormat,
) -> Result<(), String> {
    let pods = diagnose::parse_pods(&read_input(file)?).map_err(|e| e.to_string())?;
    let events = match events {
        Some(path) => diagnose::parse_events(&read_input(path)?).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let aborts = diagnose::diagnose(&pods, &events, runtime);
    match output {
        OutputFormat::Table => print!("{}", diagnose::table(&aborts)),
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&aborts).map_err(|e| e.to_string())?;
            println!("{json}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
    /// Hold a Lease so that only one replica reconciles at a time.
    #[arg(long)]
    leader_elect: bool,
    #[arg(long, default_value = "workerpool-operator-leader")]
    lease_name: String,
    /// Namespace of the Lease (default: the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity written in the Lease.
    #[arg(long, env = "POD_NAME", default_value = "workerpool-operator")]
    identity: String,
    /// Pools reconciled at once.
    #[arg(long, default_value_t = 8)]
    concurrency: u16,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_controller(args: RunArgs) -> Result<(), String> {
    init_logging(args.log_json);
    let config = RunConfig {
        namespace: args.namespace,
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_elect,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity: args.identity,
        concurrency: args.concurrency.max(1),
    };
    let runtime =
        tokio::runtime::Runtime::new().map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(run(config)).map_err(|e| e.to_string())
}

fn read_input(path: &PathBuf) -> Result<String, String> {
    if path.as_os_str() == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| format!("reading standard input: {e}"))?;
        Ok(buf)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))
    }
}

fn run_render(path: &PathBuf) -> Result<(), String> {
    let input = read_input(path)?;
    let pool = render::parse_pool(&input).map_err(|e| e.to_string())?;
    let rendered = render::render_pool(&pool).map_err(|e| e.to_string())?;
    for conflict in &rendered.conflicts {
        eprintln!("warning: {conflict}");
    }
    print!(
        "{}",
        render::to_yaml(&rendered.children).map_err(|e| e.to_string())?
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_controller(args),
        Command::Crd => {
            print!("{}", api::crd_yaml());
            Ok(())
        }
        Command::Render { file } => run_render(&file),
        Command::Diagnose {
            file,
            events,
            runtime,
            output,
        } => run_diagnose(&file, events.as_ref(), runtime, output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
