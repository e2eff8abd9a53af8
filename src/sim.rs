//! `wardswarm sim SCENARIO.toml [--engine live|model|netns]`: runs a ward scenario, writes the JSON
//! report and the SVG picture, prints a summary (or the JSON), and fails if a CI check fails.

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use wardswarm_sim::{build_report, plot, report, Scenario};

/// Exit code when the netns engine cannot run here (not root, no `ip`/`tc`): distinct from a failure.
pub const EXIT_NOT_HERE: u8 = 77;
/// Exit code when the run finished but a CI check failed (a device did not update, WAN or caps).
pub const EXIT_CHECKS: u8 = 3;

/// `sim` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// The scenario file (see simulations/scenarios/ and docs/simulations.md).
    pub scenario: PathBuf,
    /// Which engine runs it.
    #[arg(long, value_enum, default_value_t = Engine::Model)]
    pub engine: Engine,
    /// Folder for report.json and report.svg (default sim-out/<scenario>-<engine>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the JSON report instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Override the scenario's seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The wardswarm binary the netns engine runs (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// Discrete-event simulation in virtual time (thousands of devices).
    Model,
    /// The real gateway, origin and device agents in this process on loopback.
    Live,
    /// Real processes in Linux network namespaces with tc-shaped links (needs root).
    Netns,
}

/// A run that ends with a particular exit code (after printing why).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

pub fn run(args: &SimArgs) -> Result<()> {
    let mut sc = Scenario::load(&args.scenario)?;
    if let Some(s) = args.seed {
        sc.seed = s;
    }
    let engine = match args.engine {
        Engine::Model => "model",
        Engine::Live => "live",
        Engine::Netns => "netns",
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("sim-out").join(format!("{}-{engine}", sc.name)));
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let t = Instant::now();
    let mut run = match args.engine {
        Engine::Model => wardswarm_sim::model::run(&sc),
        Engine::Live => wardswarm_sim::live::run(&sc)?,
        Engine::Netns => {
            let bin = match &args.binary {
                Some(b) => b.clone(),
                None => std::env::current_exe().context("locate the wardswarm binary")?,
            };
            match wardswarm_sim::netns::run(&sc, &bin, &out) {
                Err(wardswarm_sim::netns::NetnsError::NotHere(why)) => {
                    return Err(Exit {
                        code: EXIT_NOT_HERE,
                        message: format!("the netns engine cannot run here: {why}"),
                    }
                    .into())
                }
                r => r?,
            }
        }
    };
    run.wall_s = t.elapsed().as_secs_f64();
    let rep = build_report(&sc, &run);
    let json_path = out.join("report.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&rep.json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    let svg_path = out.join("report.svg");
    plot::svg(&svg_path, &sc, &run, &rep)
        .map_err(|e| anyhow::anyhow!("draw {}: {e}", svg_path.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rep.json)?);
    } else {
        print!("{}", report::text(&rep));
        println!("report {} and {}", json_path.display(), svg_path.display());
    }
    if !rep.failures.is_empty() {
        return Err(Exit {
            code: EXIT_CHECKS,
            message: format!("simulation checks failed: {}", rep.failures.join("; ")),
        }
        .into());
    }
    Ok(())
}

/// Helpers the netns engine runs inside namespaces (hidden from `--help`).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SimTool {
    /// GET a URL and print the body (the gateway API, from inside its namespace).
    Get { url: String },
    /// Send a paced TCP stream (the clinical flow).
    Send {
        #[arg(long)]
        to: std::net::SocketAddr,
        /// Bytes per second.
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
    },
    /// Receive one TCP stream for SECONDS from its first byte; print its throughput as JSON.
    Recv {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        seconds: u64,
    },
}

pub fn tool(t: &SimTool) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match t {
            SimTool::Get { url } => {
                let body = reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(5))
                    .build()?
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?;
                print!("{body}");
            }
            SimTool::Send { to, rate, seconds } => {
                // The receiver may still be starting (a process in another namespace): retry for 10 s.
                let mut tries = 0;
                let mut s = loop {
                    match tokio::net::TcpStream::connect(to).await {
                        Ok(s) => break s,
                        Err(e) if tries >= 100 => {
                            return Err(anyhow::Error::new(e).context(format!("connect to {to}")))
                        }
                        Err(_) => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                };
                let chunk = vec![0x5au8; 16 * 1024];
                let start = Instant::now();
                let mut sent = 0u64;
                while start.elapsed().as_secs() < *seconds {
                    // Paced: never ahead of rate x elapsed.
                    let due = sent as f64 / *rate as f64;
                    let now = start.elapsed().as_secs_f64();
                    if due > now {
                        tokio::time::sleep(std::time::Duration::from_secs_f64(due - now)).await;
                    }
                    s.write_all(&chunk).await?;
                    sent += chunk.len() as u64;
                }
            }
            SimTool::Recv { listen, seconds } => {
                let l = tokio::net::TcpListener::bind(listen).await?;
                let (mut s, _) = tokio::time::timeout(std::time::Duration::from_secs(30), l.accept())
                    .await
                    .context("no clinical sender connected within 30 s")??;
                let mut buf = vec![0u8; 64 * 1024];
                let n = s.read(&mut buf).await?;
                let start = Instant::now();
                let mut got = n as u64;
                let window = std::time::Duration::from_secs(*seconds);
                while start.elapsed() < window {
                    match tokio::time::timeout(window.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Err(_) => break,
                        Ok(Ok(n)) => got += n as u64,
                        Ok(Err(e)) => return Err(e.into()),
                    }
                }
                let secs = start.elapsed().as_secs_f64();
                println!(
                    "{}",
                    serde_json::json!({"bytes": got, "seconds": secs, "bytes_per_s": got as f64 / secs})
                );
            }
        }
        Ok(())
    })
}
