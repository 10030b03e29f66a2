//! `kubectl workerpool`: see a pool, ask why its workers abort, audit the Deployments no pool
//! manages, and convert one into a pool. It reads the cluster and never writes to it.

mod read;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{FutureExt, StreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use workerpool_core::api::{Runtime, WorkerPool};
use workerpool_core::controller::run::{client_config, install_tls_provider};
use workerpool_core::diagnose;
use workerpool_core::plugin::{audit, convert, tree, workload};

#[derive(Parser)]
#[command(
    name = "kubectl-workerpool",
    bin_name = "kubectl workerpool",
    version,
    about = "See WorkerPools, ask why their workers abort, audit and convert the Deployments a team already runs (read-only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    scope: Scope,
}

#[derive(clap::Args)]
struct Scope {
    /// The namespace (default: the kubeconfig context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// Every namespace (audit only).
    #[arg(short = 'A', long, global = true)]
    all_namespaces: bool,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The kubeconfig file (default: KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value = "text",
        global = true
    )]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(Subcommand)]
enum Command {
    /// The pool as a tree: status, init Job, pods with their last abort, recent Warning Events.
    Get {
        /// The WorkerPool's name.
        name: String,
        /// Redraw whenever the pool, its pods, its Job or its Events change.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Every abort of a pool's, a pod's or a Deployment's pods, with its reason and what to do.
    Why {
        /// NAME (a WorkerPool), pod/NAME or deployment/NAME.
        target: String,
        /// The app server, when the command does not show it (gunicorn, uvicorn, celery, generic).
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<Runtime>,
    },
    /// The rules each gunicorn, uvicorn or celery Deployment that no pool manages breaks; exits 1
    /// when it finds any.
    Audit,
    /// Print a WorkerPool that replaces a Deployment.
    Convert {
        /// deployment/NAME
        target: String,
        /// The pool's name (default: the Deployment's, with `-pool`).
        #[arg(long)]
        name: Option<String>,
        /// The app server, when the command does not show it.
        #[arg(long, value_parser = parse_runtime)]
        runtime: Option<Runtime>,
    },
}

fn parse_runtime(text: &str) -> Result<Runtime, String> {
    text.parse()
}

/// What a command concluded: success, or findings that make `audit` fail a CI step.
enum Verdict {
    Clean,
    Findings,
}

struct Session {
    client: Client,
    namespace: String,
    all_namespaces: bool,
    output: Output,
    style: tree::Style,
}

impl Session {
    async fn connect(scope: Scope) -> anyhow::Result<Session> {
        install_tls_provider();
        let config = client_config(scope.kubeconfig.as_deref(), scope.context.clone()).await?;
        let namespace = scope
            .namespace
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).context("building the client")?;
        Ok(Session {
            client,
            namespace,
            all_namespaces: scope.all_namespaces,
            output: scope.output,
            style: tree::Style {
                colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            },
        })
    }

    fn print<T: serde::Serialize>(
        &self,
        value: &T,
        text: impl FnOnce() -> String,
    ) -> anyhow::Result<()> {
        match self.output {
            Output::Text => print!("{}", text()),
            Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
            Output::Yaml => print!("{}", workerpool_core::yaml::to_string(value)?),
        }
        Ok(())
    }
}

async fn pool_tree(session: &Session, name: &str) -> anyhow::Result<tree::PoolTree> {
    let ns = &session.namespace;
    let pool = read::api::<WorkerPool>(&session.client, Some(ns))
        .get(name)
        .await
        .with_context(|| format!("reading workerpool {name} in {ns}"))?;
    let pods = read::pods(&session.client, ns, &read::pool_selector(name)).await?;
    let jobs = read::pool_jobs(&session.client, ns, name).await?;
    let (pod_events, warnings) = read::events(&session.client, ns, &pods, Some(name)).await?;
    Ok(tree::build(&tree::Observed {
        pool: &pool,
        pods: &pods,
        jobs: &jobs,
        pod_events: &pod_events,
        warnings: &warnings,
        now: jiff::Timestamp::now(),
    }))
}

async fn get(session: &Session, name: &str) -> anyhow::Result<Verdict> {
    let tree = pool_tree(session, name).await?;
    session.print(&tree, || tree::render(&tree, session.style))?;
    Ok(Verdict::Clean)
}

/// A watch of one kind in `ns` that keeps `store` current; each item says something changed.
fn watched<K>(
    client: &Client,
    ns: &str,
    store: reflector::store::Writer<K>,
    config: watcher::Config,
) -> futures::stream::BoxStream<'static, Result<(), watcher::Error>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflector(store, watcher(Api::namespaced(client.clone(), ns), config))
        .default_backoff()
        .map(|r| r.map(|_| ()))
        .boxed()
}

/// Changes seen within this long of each other are drawn once.
const REDRAW_AFTER: Duration = Duration::from_millis(250);

/// `get -w`: one watch per kind, kept in local stores; the tree is drawn from the stores, so a
/// change costs no request, and only a tree that differs is drawn again.
async fn watch(session: &Session, name: &str) -> anyhow::Result<Verdict> {
    let ns = session.namespace.as_str();
    let client = &session.client;
    // Fail at once, as `get` does, when there is no such pool.
    read::api::<WorkerPool>(client, Some(ns))
        .get(name)
        .await
        .with_context(|| format!("reading workerpool {name} in {ns}"))?;
    let selector = read::pool_selector(name);
    let (pools, pools_writer) = reflector::store::<WorkerPool>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let (jobs, jobs_writer) = reflector::store::<Job>();
    let (events, events_writer) = reflector::store::<Event>();
    let (recorded, recorded_writer) = reflector::store::<read::RecordedEvent>();
    let by_name = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let by_pool = watcher::Config::default().labels(&selector);
    let kubelet = watcher::Config::default().fields(read::KUBELET_EVENTS);
    let changes = stream::select_all([
        watched(client, ns, pools_writer, by_name),
        watched(client, ns, pods_writer, by_pool.clone()),
        watched(client, ns, jobs_writer, by_pool),
        watched(client, ns, events_writer, kubelet),
        watched(client, ns, recorded_writer, watcher::Config::default()),
    ]);
    let mut changes = std::pin::pin!(changes);
    let mut last_drawn = None;
    while let Some(first) = changes.next().await {
        if let Err(e) = first {
            eprintln!("watch: {e}");
        }
        // Let a burst of changes settle into one redraw.
        let settle = tokio::time::sleep(REDRAW_AFTER);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                _ = &mut settle => break,
                next = changes.next() => if next.is_none() { break },
            }
        }
        // Nothing is drawn from a store whose first list has not arrived: a half-read tree.
        let listed = [
            pools.wait_until_ready().now_or_never(),
            pods.wait_until_ready().now_or_never(),
            jobs.wait_until_ready().now_or_never(),
            events.wait_until_ready().now_or_never(),
            recorded.wait_until_ready().now_or_never(),
        ];
        if listed.iter().any(|ready| !matches!(ready, Some(Ok(())))) {
            continue;
        }
        let Some(pool) = pools.state().into_iter().next() else {
            continue;
        };
        let pods: Vec<Pod> = pods.state().iter().map(|p| (**p).clone()).collect();
        let jobs: Vec<Job> = jobs.state().iter().map(|j| (**j).clone()).collect();
        let events: Vec<Event> = events.state().iter().map(|e| (**e).clone()).collect();
        let recorded: Vec<read::RecordedEvent> =
            recorded.state().iter().map(|e| (**e).clone()).collect();
        let pod_events = read::kubelet_events(&events, &pods);
        let warnings = read::pool_warnings(&recorded, name);
        let tree = tree::build(&tree::Observed {
            pool: &pool,
            pods: &pods,
            jobs: &jobs,
            pod_events: &pod_events,
            warnings: &warnings,
            now: jiff::Timestamp::now(),
        });
        if last_drawn.as_ref() == Some(&tree) {
            continue;
        }
        if session.output == Output::Text && session.style.colour {
            // Clear the screen and draw from its top, as `watch` does.
            print!("\x1b[2J\x1b[H");
        } else if last_drawn.is_some() && session.output == Output::Text {
            println!();
        }
        session.print(&tree, || tree::render(&tree, session.style))?;
        last_drawn = Some(tree);
    }
    Ok(Verdict::Clean)
}

async fn why(session: &Session, what: &str, runtime: Option<Runtime>) -> anyhow::Result<Verdict> {
    let target = read::target(&session.client, &session.namespace, what, runtime).await?;
    let findings = read::why(&session.client, &target).await?;
    let warnings = diagnose::warnings(&target.pods, target.runtime);
    let printable = diagnose::printable_findings(&findings);
    session.print(&printable, || {
        let mut out = String::new();
        for warning in &warnings {
            out.push_str(&format!("warning: {warning}\n"));
        }
        if findings.is_empty() {
            out.push_str(&format!(
                "No aborts in {} pod{} of {what}.\n",
                target.pods.len(),
                if target.pods.len() == 1 { "" } else { "s" }
            ));
        } else {
            out.push_str(&diagnose::table(&findings));
        }
        out
    })?;
    Ok(Verdict::Clean)
}

async fn audit(session: &Session) -> anyhow::Result<Verdict> {
    let scope = (!session.all_namespaces).then_some(session.namespace.as_str());
    let deployments = read::api::<Deployment>(&session.client, scope)
        .list(&ListParams::default())
        .await
        .context("listing deployments")?;
    let mut audits = Vec::new();
    for deployment in &deployments.items {
        let judged = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| workload::app_server(s, None))
            .is_some()
            && !workload::owned_by_pool(deployment);
        if !judged {
            continue;
        }
        let pods = match deployment
            .spec
            .as_ref()
            .and_then(|s| workload::selector_string(&s.selector))
        {
            Some(selector) => {
                let ns = deployment.namespace().unwrap_or_default();
                read::pods(&session.client, &ns, &selector).await?
            }
            None => Vec::new(),
        };
        audits.extend(audit::audit(deployment, &pods, None));
    }
    let found = audits.iter().any(|a| !a.findings.is_empty());
    session.print(&audits, || audit_table(&audits))?;
    Ok(if found {
        Verdict::Findings
    } else {
        Verdict::Clean
    })
}

fn audit_table(audits: &[audit::Audit]) -> String {
    let rows: Vec<[String; 5]> = audits
        .iter()
        .flat_map(|a| {
            a.findings.iter().map(move |f| {
                [
                    a.namespace.clone(),
                    a.name.clone(),
                    a.runtime.clone(),
                    f.rule.to_string(),
                    format!("{} Fix: {}.", diagnose::printable(&f.message), f.fix),
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        return format!(
            "No findings in {} gunicorn, uvicorn or celery Deployment{}.\n",
            audits.len(),
            if audits.len() == 1 { "" } else { "s" }
        );
    }
    let header = ["NAMESPACE", "DEPLOYMENT", "RUNTIME", "RULE", "FINDING"];
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..4).map(width).collect();
    let line = |cells: [&str; 5]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate().take(4) {
            text.push_str(&format!("{cell:<w$}   ", w = widths[i]));
        }
        text.push_str(cells[4]);
        text.push('\n');
        text
    };
    let mut out = line(header);
    for row in &rows {
        out.push_str(&line([&row[0], &row[1], &row[2], &row[3], &row[4]]));
    }
    out
}

async fn convert(
    session: &Session,
    what: &str,
    name: Option<&str>,
    runtime: Option<Runtime>,
) -> anyhow::Result<Verdict> {
    let deployment_name = match what.split_once('/') {
        Some(("deployment" | "deployments" | "deploy" | "deployment.apps", name)) => name,
        _ => return Err(anyhow!("{what}: convert reads deployment/NAME")),
    };
    let ns = &session.namespace;
    let deployment = read::api::<Deployment>(&session.client, Some(ns))
        .get(deployment_name)
        .await
        .with_context(|| format!("reading deployment {deployment_name} in {ns}"))?;
    let pods = match deployment
        .spec
        .as_ref()
        .and_then(|s| workload::selector_string(&s.selector))
    {
        Some(selector) => read::pods(&session.client, ns, &selector).await?,
        None => Vec::new(),
    };
    let converted = convert::convert(&deployment, &pods, name, runtime)?;
    match session.output {
        Output::Text | Output::Yaml => print!(
            "{}",
            convert::to_yaml(&converted, &format!("deployment/{deployment_name} in {ns}"))?
        ),
        Output::Json => println!("{}", serde_json::to_string_pretty(&converted.pool)?),
    }
    Ok(Verdict::Clean)
}

async fn run(cli: Cli) -> anyhow::Result<Verdict> {
    if cli.scope.all_namespaces && !matches!(cli.command, Command::Audit) {
        return Err(anyhow!(
            "-A/--all-namespaces is for audit; get, why and convert read one namespace (-n)"
        ));
    }
    let session = Session::connect(cli.scope).await?;
    match cli.command {
        Command::Get { name, watch: false } => get(&session, &name).await,
        Command::Get { name, watch: true } => watch(&session, &name).await,
        Command::Why { target, runtime } => why(&session, &target, runtime).await,
        Command::Audit => audit(&session).await,
        Command::Convert {
            target,
            name,
            runtime,
        } => convert(&session, &target, name.as_deref(), runtime).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Verdict::Clean) => ExitCode::SUCCESS,
        // Findings of `audit` fail a CI step; errors are told apart by their code.
        Ok(Verdict::Findings) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
