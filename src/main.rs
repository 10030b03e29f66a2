use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use workerpool_operator::{api, render};

#[derive(Parser)]
#[command(name = "workerpool-operator", version, about = "Kubernetes operator for pools of Python app-server workers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the WorkerPool CustomResourceDefinition as YAML.
    Crd,
    /// Print every object the operator would apply for a pool on first apply.
    Render {
        /// WorkerPool manifest (YAML or JSON); `-` reads standard input.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
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
    print!("{}", render::to_yaml(&rendered.children).map_err(|e| e.to_string())?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => {
            print!("{}", api::crd_yaml());
            Ok(())
        }
        Command::Render { file } => run_render(&file),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
