//! `ringhub-bench`: see the README for the runs and what they measure.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use ringhub_bench::cli::{Cli, Command, Common, Load};
use ringhub_bench::run::{self, StepPlan, StepResult};
use ringhub_bench::workload::Workload;
use ringhub_bench::{chart, group, report};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (common, workload, steps, duration, load) = match cli.command {
        Command::Worker => {
            return match group::worker_process_main() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringhub-bench worker: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Connect {
            common,
            connections,
            hold,
        } => (common, Workload::Connect, connections, hold, None),
        Command::Echo {
            common,
            load,
            connections,
            in_flight,
        } => {
            let w = Workload::Echo {
                size: load.size,
                in_flight,
            };
            (common, w, connections, load.duration, Some(load))
        }
        Command::Fanout {
            common,
            load,
            subscribers,
            publishers,
            topics,
            rate,
        } => {
            let w = Workload::Fanout {
                size: load.size,
                topics,
                publishers,
                rate,
            };
            (common, w, subscribers, load.duration, Some(load))
        }
    };
    match run_all(&common, &workload, &steps, duration, load.as_ref()) {
        Ok(results) => {
            // Fails when anything failed to connect or was lost, so scripts notice.
            let clean = results
                .iter()
                .all(|r| r.counters.failed() == 0 && r.lost == 0);
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ringhub-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_all(
    common: &Common,
    workload: &Workload,
    steps: &[usize],
    duration: std::time::Duration,
    load: Option<&Load>,
) -> Result<Vec<StepResult>, String> {
    let targets = common.targets()?;
    let progress = !common.quiet && !common.json && std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for &connections in steps {
        for (target, server_pid) in &targets {
            let plan = StepPlan {
                target: target.clone(),
                workload: workload.clone(),
                connections,
                server_pid: *server_pid,
                processes: common.processes as usize,
                threads: common.threads as usize,
                sources: common.sources as usize,
                concurrency: common.concurrency as usize,
                connect_rate: common.connect_rate,
                connect_timeout: common.connect_timeout,
                duration,
                drain: load.map_or(std::time::Duration::ZERO, |l| l.drain),
                messages: load.map_or(0, |l| l.messages),
                progress,
            };
            let result = run::run_step(&plan).map_err(|e| format!("{target}: {e}"))?;
            if !common.json {
                print!("{}", report::summary(&result));
                println!();
            }
            results.push(result);
        }
    }
    if common.json {
        let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
        println!("{json}");
    } else if results.len() > 1 {
        print!("{}", report::table(&results));
    }
    if let Some(path) = &common.chart {
        chart::draw(&results, path).map_err(|e| e.to_string())?;
        if !common.json {
            println!("chart written to {}", path.display());
        }
    }
    Ok(results)
}
