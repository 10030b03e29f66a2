use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use workerpool_core::controller::run::{RunConfig, Scope, run};
use workerpool_core::{api, diagnose, render};

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
    /// Run the real controller against an embedded API server and a simulated cluster.
    Sandbox {
        /// WorkerPool manifest (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// A built-in scenario (healthy, slow-boot, boot-failure, oom, ignore-sigterm,
        /// boot-storm, long-tasks, broker-down, child-memory) or a scenario YAML file.
        #[arg(long, default_value = "healthy")]
        scenario: String,
        /// Simulated time: seconds, or with a unit (90s, 10m, 1h); the scenario's own by default.
        #[arg(long, value_parser = parse_duration)]
        duration: Option<u64>,
        /// Seed for every random choice; the same seed gives the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
        output: SandboxOutput,
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
        /// A container log saved with `kubectl logs [--previous]`, scanned as the controller
        /// scans it: `FILE` when the input holds one pod, else `POD=FILE` or
        /// `POD/CONTAINER=FILE`; repeatable.
        #[arg(long = "log", value_name = "[POD[/CONTAINER]=]FILE")]
        logs: Vec<String>,
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

#[derive(Clone, Copy, clap::ValueEnum)]
enum SandboxOutput {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 600, 90s or 10m"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    if seconds == 0 {
        return Err("the duration must be more than 0".into());
    }
    #[cfg(feature = "sandbox")]
    {
        let max = workerpool_sandbox::scenario::MAX_DURATION_SECONDS;
        if seconds > max {
            return Err(format!(
                "{text:?}: the sandbox simulates at most {max} s (24h) of virtual time"
            ));
        }
    }
    Ok(seconds)
}

/// The container image is built without the sandbox.
#[cfg(not(feature = "sandbox"))]
fn run_sandbox(
    _: &PathBuf,
    _: &str,
    _: Option<u64>,
    _: u64,
    _: SandboxOutput,
) -> Result<(), String> {
    Err("this build has no sandbox: build with the `sandbox` feature (on by default)".into())
}

#[cfg(feature = "sandbox")]
fn run_sandbox(
    path: &PathBuf,
    scenario: &str,
    duration: Option<u64>,
    seed: u64,
    output: SandboxOutput,
) -> Result<(), String> {
    use workerpool_sandbox::scenario::{BUILT_IN, Scenario};
    use workerpool_sandbox::{Options, Sandbox, report::Report};

    let input = read_input(path)?;
    let parsed = render::parse_pools(&input).map_err(|e| e.to_string())?;
    let pool = match parsed.pools.as_slice() {
        [pool] => pool,
        pools => {
            return Err(format!(
                "the sandbox runs one WorkerPool; the input holds {}",
                pools.len()
            ));
        }
    };
    for note in &parsed.skipped {
        eprintln!("note: {note}");
    }
    if let Ok(rendered) = render::render_pool(pool) {
        for advice in &rendered.advice {
            eprintln!("warning: {advice}");
        }
    }
    let pool = serde_json::to_value(pool).map_err(|e| e.to_string())?;
    let scenario = match Scenario::built_in(scenario) {
        Some(built_in) => built_in,
        None if std::path::Path::new(scenario).is_file() => {
            let text = std::fs::read_to_string(scenario)
                .map_err(|e| format!("reading {scenario}: {e}"))?;
            Scenario::from_yaml(&text)?
        }
        None => {
            return Err(format!(
                "unknown scenario {scenario:?}: use one of {} or a scenario YAML file",
                BUILT_IN.join(", ")
            ));
        }
    };
    let seconds = duration.unwrap_or(scenario.duration_seconds);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let report = runtime.block_on(async move {
        let mut sandbox = Sandbox::new(Options::new(scenario, seed));
        sandbox.add_pool(pool)?;
        sandbox.start_operator();
        sandbox.run_for(seconds).await;
        sandbox.stop_operator().await;
        Ok::<_, String>(Report::of(&sandbox))
    })?;
    match output {
        SandboxOutput::Text => print!("{}", report.to_text()),
        SandboxOutput::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
        ),
    }
    Ok(())
}

fn parse_runtime(text: &str) -> Result<api::Runtime, String> {
    text.parse()
}

fn run_diagnose(
    file: &PathBuf,
    events: Option<&PathBuf>,
    runtime: Option<api::Runtime>,
    logs: &[String],
    output: OutputFormat,
) -> Result<(), String> {
    // Errors quote the input, which may hold terminal escapes.
    let shown = |e: diagnose::DiagnoseError| diagnose::printable(&e.to_string());
    let pods = diagnose::parse_pods(&read_input(file)?).map_err(shown)?;
    let events = match events {
        Some(path) => diagnose::parse_events(&read_input(path)?).map_err(shown)?,
        None => Vec::new(),
    };
    let logs = logs
        .iter()
        .map(|arg| {
            let (pod, container, path) = diagnose::parse_log_arg(arg);
            let bytes = read_bytes(&PathBuf::from(path))?;
            Ok(diagnose::SavedLog {
                pod,
                container,
                previous: None,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let findings = diagnose::diagnose(&pods, &events, runtime, &logs).map_err(shown)?;
    for warning in diagnose::warnings(&pods, runtime) {
        eprintln!("warning: {warning}");
    }
    match output {
        OutputFormat::Table => print!("{}", diagnose::table(&findings)),
        OutputFormat::Json => {
            let findings = diagnose::printable_findings(&findings);
            let json = serde_json::to_string_pretty(&findings).map_err(|e| e.to_string())?;
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
    /// The kubeconfig to use (default: KUBECONFIG, ~/.kube/config, else the pod's ServiceAccount).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    context: Option<String>,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_controller(args: RunArgs) -> Result<(), String> {
    init_logging(args.log_json);
    let config = RunConfig {
        scope: Scope {
            namespace: args.namespace,
            identity: args.identity,
            concurrency: args.concurrency.max(1),
        },
        metrics_addr: args.metrics_addr,
        leader_election: args.leader_elect,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        kubeconfig: args.kubeconfig,
        context: args.context,
    };
    // One thread: the controller's work is a chain of short steps on one event stream, and
    // handing each watch event between threads cost more CPU than the steps themselves.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?;
    runtime.block_on(run(config)).map_err(|e| format!("{e:#}"))
}

/// The most any input file may hold: far more than any object or log tail worth reading.
const MAX_INPUT_BYTES: u64 = 64 * 1024 * 1024;

/// A file, or standard input for `-`, refused when larger than [`MAX_INPUT_BYTES`].
fn read_bytes(path: &PathBuf) -> Result<Vec<u8>, String> {
    let (name, reader): (String, Box<dyn Read>) = if path.as_os_str() == "-" {
        ("standard input".into(), Box::new(std::io::stdin()))
    } else {
        let file =
            std::fs::File::open(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        (path.display().to_string(), Box::new(file))
    };
    let mut buf = Vec::new();
    reader
        .take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("reading {name}: {e}"))?;
    if buf.len() as u64 > MAX_INPUT_BYTES {
        return Err(format!(
            "{name} is larger than {} MiB",
            MAX_INPUT_BYTES >> 20
        ));
    }
    Ok(buf)
}

fn read_input(path: &PathBuf) -> Result<String, String> {
    String::from_utf8(read_bytes(path)?)
        .map_err(|e| format!("reading {}: not UTF-8: {e}", path.display()))
}

fn run_render(path: &PathBuf) -> Result<(), String> {
    let input = read_input(path)?;
    let parsed = render::parse_pools(&input).map_err(|e| e.to_string())?;
    for note in &parsed.skipped {
        eprintln!("note: {note}");
    }
    if parsed.pools.is_empty() {
        return Err("no workerpool.dev/v1alpha1 WorkerPool in the input".into());
    }
    let several = parsed.pools.len() > 1;
    let mut out = String::new();
    for pool in &parsed.pools {
        let name = pool.metadata.name.as_deref().unwrap_or("workerpool");
        let about = |text: &str| match several {
            true => format!("{name}: {text}"),
            false => text.to_string(),
        };
        let rendered = render::render_pool(pool).map_err(|e| about(&e.to_string()))?;
        for conflict in &rendered.conflicts {
            eprintln!("warning: {}", about(&conflict.to_string()));
        }
        for advice in &rendered.advice {
            eprintln!("warning: {}", about(advice));
        }
        out.push_str(&render::first_apply_note(pool, &rendered.children));
        out.push_str(&render::to_yaml(&rendered.children).map_err(|e| e.to_string())?);
    }
    print!("{out}");
    Ok(())
}

/// jemalloc: the controller allocates and frees a little for every watch event, which glibc's
/// and musl's allocators do at a higher CPU cost (measured in docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_controller(args),
        Command::Crd => {
            print!("{}", api::crd_yaml());
            Ok(())
        }
        Command::Render { file } => run_render(&file),
        Command::Sandbox {
            file,
            scenario,
            duration,
            seed,
            output,
        } => run_sandbox(&file, &scenario, duration, seed, output),
        Command::Diagnose {
            file,
            events,
            runtime,
            logs,
            output,
        } => run_diagnose(&file, events.as_ref(), runtime, &logs, output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
