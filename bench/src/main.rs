//! `ringhub-bench`: see the README for the runs and what they measure.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser as _;
use ringhub_bench::cli::{Cli, Command, Common, Load};
use ringhub_bench::login::Login;
use ringhub_bench::run::{self, StepPlan, StepResult};
use ringhub_bench::target::Target;
use ringhub_bench::workload::Workload;
use ringhub_bench::{chart, group, report};

/// One run of every step: its servers and their PIDs.
type Round = (Vec<Target>, Vec<u32>);

/// What to run, once the command line is read.
struct Run {
    common: Common,
    workload: Workload,
    steps: Vec<usize>,
    duration: Duration,
    load: Option<Load>,
    rounds: Vec<Round>,
    login: Login,
    settle: Duration,
    redis_nodes: Vec<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let run = match plan(cli.command) {
        Ok(Some(run)) => run,
        Ok(None) => {
            return match group::worker_process_main() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ringhub-bench worker: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Err(e) => {
            eprintln!("ringhub-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match run_all(&run) {
        Ok(results) => {
            // Fails when anything failed to connect, was lost or refused
            // with an error frame, so scripts notice.
            let clean = results
                .iter()
                .all(|r| r.counters.failed() == 0 && r.lost == 0 && r.counters.error_frames() == 0);
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

/// Turns a subcommand into a run; `None` for the internal worker.
fn plan(command: Command) -> Result<Option<Run>, String> {
    let size = |load: &Load, name: &str| load.size.unwrap_or(Workload::default_size(name));
    let run = match command {
        Command::Worker => return Ok(None),
        Command::Connect {
            common,
            connections,
            hold,
        } => Run {
            rounds: compare_rounds(&common)?,
            common,
            workload: Workload::Connect,
            steps: connections,
            duration: hold,
            load: None,
            login: Login::DevUser,
            settle: Duration::ZERO,
            redis_nodes: Vec::new(),
        },
        Command::Echo {
            common,
            load,
            connections,
            in_flight,
        } => Run {
            rounds: compare_rounds(&common)?,
            common,
            workload: Workload::Echo {
                size: size(&load, "echo"),
                in_flight,
            },
            steps: connections,
            duration: load.duration,
            load: Some(load),
            login: Login::DevUser,
            settle: Duration::ZERO,
            redis_nodes: Vec::new(),
        },
        Command::Fanout {
            common,
            load,
            subscribers,
            publishers,
            topics,
            rate,
        } => Run {
            rounds: compare_rounds(&common)?,
            common,
            workload: Workload::Fanout {
                size: size(&load, "fanout"),
                topics,
                publishers,
                rate,
            },
            steps: subscribers,
            duration: load.duration,
            load: Some(load),
            login: Login::DevUser,
            settle: Duration::ZERO,
            redis_nodes: Vec::new(),
        },
        Command::Direct {
            common,
            load,
            servers,
            pairs,
            rate,
        } => Run {
            rounds: vec![(servers.targets.clone(), common.server_pid.clone())],
            common,
            workload: Workload::Direct {
                size: size(&load, "direct"),
                pairs,
                rate,
            },
            steps: vec![pairs as usize],
            duration: load.duration,
            load: Some(load),
            login: login(servers.token_secret),
            settle: servers.settle,
            redis_nodes: servers.redis_nodes,
        },
        Command::Mixed {
            common,
            load,
            servers,
            users,
            rooms,
            rooms_per_user,
            publish_share,
            rate,
            seed,
        } => Run {
            rounds: vec![(servers.targets.clone(), common.server_pid.clone())],
            common,
            workload: Workload::Mixed {
                size: size(&load, "mixed"),
                users,
                rooms,
                rooms_per_user,
                publish_permille: (publish_share * 1000.0).round() as u32,
                rate,
                seed,
            },
            steps: vec![users as usize],
            duration: load.duration,
            load: Some(load),
            login: login(servers.token_secret),
            settle: servers.settle,
            redis_nodes: servers.redis_nodes,
        },
    };
    Ok(Some(run))
}

/// One round per `--compare` server (or the one `--url`).
fn compare_rounds(common: &Common) -> Result<Vec<Round>, String> {
    Ok(common
        .targets()?
        .into_iter()
        .map(|(target, pid)| (vec![target], pid.into_iter().collect()))
        .collect())
}

fn login(token_secret: Option<String>) -> Login {
    token_secret.map_or(Login::DevUser, |secret| Login::Hs256 { secret })
}

fn run_all(run: &Run) -> Result<Vec<StepResult>, String> {
    let common = &run.common;
    let progress = !common.quiet && !common.json && std::io::stderr().is_terminal();
    let mut results = Vec::new();
    for &connections in &run.steps {
        for (targets, server_pids) in &run.rounds {
            let plan = StepPlan {
                targets: targets.clone(),
                workload: run.workload.clone(),
                login: run.login.clone(),
                connections,
                server_pids: server_pids.clone(),
                settle: run.settle,
                redis_nodes: run.redis_nodes.clone(),
                processes: common.processes as usize,
                threads: common.threads as usize,
                sources: common.sources as usize,
                concurrency: common.concurrency as usize,
                connect_rate: common.connect_rate,
                connect_timeout: common.connect_timeout,
                duration: run.duration,
                drain: run.load.as_ref().map_or(Duration::ZERO, |l| l.drain),
                messages: run.load.as_ref().map_or(0, |l| l.messages),
                progress,
            };
            let names: Vec<String> = targets.iter().map(ToString::to_string).collect();
            let result = run::run_step(&plan).map_err(|e| format!("{}: {e}", names.join(",")))?;
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
