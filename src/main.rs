//! `wardswarm`: the one command-line tool for device makers, hospital IT and CI.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context, Result};

mod args;
mod cert;
mod client;
mod daemon;
mod demo;
mod demo_rollout;
mod sim;
use args::{parse_period, MAX_PLAIN_COUNTER};
use clap::{Args, Parser, Subcommand};
use wardswarm_node::{
    fsutil,
    keys::{KeyArg, SecretKey},
    release::{self, BuildRequest},
    root::{self, Role, RoleName, TrustRoot},
    signed::DocKind,
    Timestamp,
};

#[derive(Parser, Debug)]
#[command(
    name = "wardswarm",
    version,
    about = "Peer-to-peer update distribution for hospital wards"
)]
struct Cli {
    /// Pretend the current time is this RFC 3339 instant (tests, reproducible builds).
    #[arg(long, global = true, hide = true, value_parser = parse_time)]
    now: Option<Timestamp>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create an ed25519 signing key (PKCS#8 PEM, mode 0600) and print its public id.
    Keygen {
        /// Where to write the private key; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Create, sign, rotate, verify and show trust roots.
    #[command(subcommand)]
    Root(RootCmd),
    /// Build, verify and show signed releases.
    #[command(subcommand)]
    Release(ReleaseCmd),
    /// Run the chain of custody end to end on this machine and print what happened.
    Demo(demo::DemoArgs),
    /// Simulate a ward (or a hospital of wards) from a scenario file and report against the bound.
    Sim(sim::SimArgs),
    /// Helpers the netns simulation runs inside namespaces.
    #[command(subcommand, hide = true)]
    SimTool(sim::SimTool),
    /// Print the libp2p peer id of a key file (a node's identity).
    PeerId {
        #[arg(long)]
        key: PathBuf,
    },
    /// Rollouts on a gateway, through its API (`--api`; token from WARDSWARM_TOKEN or --token-file).
    #[command(subcommand)]
    Rollout(client::RolloutCmd),
    /// API tokens on a gateway (admin).
    #[command(subcommand)]
    Token(client::TokenCmd),
    /// Issue ward membership certificates, and revoke them.
    #[command(subcommand)]
    Cert(cert::CertCmd),
    /// Run a ward swarm node until SIGTERM; with an [agent] section, the device agent that installs
    /// releases A/B with automatic rollback.
    Node {
        /// The node's TOML configuration (see docs/examples/device.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the ward gateway: poll the origin, download each needed artifact once, seed the ward.
    Seeder {
        /// The gateway's TOML configuration (see docs/examples/gateway.toml).
        #[arg(long)]
        config: PathBuf,
    },
    /// Publish and serve an origin: release directories plus a signed index.
    #[command(subcommand)]
    Origin(OriginCmd),
    /// Check a device's hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Create or apply a binary delta directly (benchmarks, debugging; releases use `release build --base`).
    #[command(subcommand)]
    Delta(DeltaCmd),
}

/// The newest delta format a release build writes (`release build --delta-format`).
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum DeltaFormat {
    #[value(name = "10")]
    Ten,
    #[value(name = "9")]
    Nine,
    #[value(name = "8")]
    Eight,
    #[value(name = "7")]
    Seven,
    #[value(name = "5")]
    Five,
    #[value(name = "4")]
    Four,
    #[value(name = "3")]
    Three,
    #[value(name = "1")]
    One,
}

#[derive(Subcommand, Debug)]
enum DeltaCmd {
    /// Create a delta from BASE to TARGET: the smallest of a bsdiff-style diff (LZMA2 and a base-aware model), LZMA2 against the base, and both with gzip streams inflated.
    Create {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        target: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// How the patch streams are compressed: cm (format 4, smallest: LZMA2, and the add bytes
        /// coded by a model that sees the base), lzma2 (format 3: LZMA2 only, faster to apply) or
        /// zstd (format 1).
        #[arg(long, default_value = "cm", value_parser = ["cm", "lzma2", "zstd"])]
        codec: String,
        /// zstd level of the patch streams (with `--codec zstd`).
        #[arg(long, default_value_t = wardswarm_node::delta::LEVEL)]
        level: i32,
        /// With `--codec cm`: write format 4 only if it makes the delta at least this many percent
        /// smaller than format 3 (it costs the device about 20 times the CPU to apply), for a delta
        /// of more than `--model-free-literals` add literals.
        #[arg(long, default_value_t = wardswarm_node::delta::MODEL_MIN_GAIN_PERCENT,
              value_parser = clap::value_parser!(u8).range(0..=100))]
        model_min_gain: u8,
        /// With `--codec cm`: up to this many add literals, format 4 is written wherever it is
        /// smaller, whatever the gain (its apply costs the device per literal: about half a second
        /// for the default 1 MiB on the project machine).
        #[arg(long, default_value_t = wardswarm_node::delta::MODEL_FREE_LITERALS)]
        model_free_literals: u64,
        /// gzip streams in the images: auto (format 5 when a gzip stream that this build
        /// re-compresses bit for bit changed: the images are diffed with them inflated) or off.
        #[arg(long, default_value = "auto", value_parser = ["auto", "off"])]
        gzip: String,
        /// Formats 6 and 7: auto (where the base is at most 16 MiB, also code the new image as one
        /// LZMA2 stream with the base as its dictionary; and try the diff's seeks as 32-bit words;
        /// each kept where it is smaller; raw LZMA2 sections; x86-64 and AArch64 executables
        /// diffed with their data references made absolute too, Thumb-2 code with its calls; the
        /// diff's copy bytes coded against the base where smaller) or
        /// off (formats 1 to 5 only,
        /// calls and branches made absolute: what every agent since format 5 applies).
        #[arg(long = "formats-6-7", default_value = "auto", value_parser = ["auto", "off"])]
        formats_6_7: String,
    },
    /// Apply a delta to BASE, streaming the new image to OUT (bounded memory).
    Apply {
        #[arg(long)]
        base: PathBuf,
        #[arg(long)]
        delta: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Refuse output longer than this many bytes.
        #[arg(long, default_value_t = u64::MAX - 1)]
        max_length: u64,
        /// The new image's BLAKE3 (`blake3:<64 hex digits>`, as a manifest names it): an output
        /// that hashes otherwise (a wrong base, a delta for another pair) is refused and nothing is
        /// left at OUT. Without it the output's hash is printed, not checked.
        #[arg(long)]
        expect: Option<wardswarm_node::hash::Hash>,
    },
}

#[derive(Subcommand, Debug)]
enum OriginCmd {
    /// Serve DIR over HTTP with byte ranges (for development and tests; production can use any static server).
    Serve {
        /// The origin folder (index.json and release directories).
        dir: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
    },
    /// Sign DIR/index.json over every release directory under DIR (version: previous + 1).
    Publish {
        /// The origin folder.
        dir: PathBuf,
        /// A release key; repeat to meet the release threshold.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The trust root, to check the index verifies before it is written.
        #[arg(long)]
        root: PathBuf,
        /// How long the index is valid, e.g. `7d`, `12h`; gateways refuse a stale index.
        #[arg(long, default_value = "7d", value_parser = parse_period)]
        expires: Duration,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCmd {
    /// Verify the hash chain of an audit log (JSON lines); names the first broken line.
    Verify {
        /// The audit.jsonl file.
        file: PathBuf,
    },
}

#[derive(Args, Debug, Clone, Default)]
struct RoleKeys {
    /// A root key (key file, or public id `ed25519:<hex>` where allowed); repeat for m-of-n.
    #[arg(long = "root-key", value_name = "KEY")]
    root_keys: Vec<String>,
    /// A release key (key file or public id); repeat for m-of-n.
    #[arg(long = "release-key", value_name = "KEY")]
    release_keys: Vec<String>,
    /// A membership key (key file or public id); repeat for m-of-n.
    #[arg(long = "membership-key", value_name = "KEY")]
    membership_keys: Vec<String>,
    /// Threshold of a role, e.g. `release=2` (default 1).
    #[arg(long = "threshold", value_name = "ROLE=M", value_parser = parse_threshold)]
    thresholds: Vec<(RoleName, u32)>,
}

#[derive(Subcommand, Debug)]
enum RootCmd {
    /// Create version 1 of a trust root, signed by all of its root keys.
    Init {
        #[command(flatten)]
        keys: RoleKeys,
        /// How long the root stays valid, e.g. `365d`, `2years`.
        #[arg(long, value_parser = parse_period)]
        expires: Duration,
        /// Output file; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Add signatures to a root document (in place, atomically).
    Sign {
        /// The root document to sign.
        #[arg(long)]
        root: PathBuf,
        /// A root key file of this version (or of the previous one, with --previous).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The version this one rotates from, so that its root keys may sign too.
        #[arg(long)]
        previous: Option<PathBuf>,
    },
    /// Write version N+1 of a root: roles not given are kept. Key files given as new root keys sign it;
    /// --key adds signatures by the current root keys. Both thresholds must be met for devices to accept it.
    Rotate {
        /// The current (trusted) root.
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        keys: RoleKeys,
        /// A signing key file (a current or a new root key).
        #[arg(long = "key")]
        signers: Vec<PathBuf>,
        /// How long the new root stays valid, e.g. `365d`, `2years`.
        #[arg(long, value_parser = parse_period)]
        expires: Duration,
        /// Output file for the new version.
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a root (self-signed) or a chain of rotations from a trusted root.
    Verify {
        /// Start from this trusted root; each ROOT must be the next version.
        #[arg(long)]
        trusted: Option<PathBuf>,
        /// Root documents, oldest first.
        #[arg(required = true)]
        roots: Vec<PathBuf>,
    },
    /// Print a root's roles and signatures.
    Show {
        root: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ReleaseCmd {
    /// Build a signed release directory from a device image (atomically).
    Build {
        /// The new device image.
        #[arg(long)]
        target: PathBuf,
        /// Product name.
        #[arg(long)]
        product: String,
        /// Hardware ids the image runs on (comma-separated or repeated).
        #[arg(long, value_delimiter = ',', required = true)]
        hardware: Vec<String>,
        /// Human version, e.g. 4.2.1.
        #[arg(long)]
        version: String,
        /// Monotonic release counter (anti-rollback); must grow with every release. Counters above
        /// 2^53 are refused unless --force-counter: a device that commits a counter near u64::MAX can
        /// never take another release until it is re-provisioned.
        #[arg(long)]
        counter: u64,
        /// Accept a counter above 2^53.
        #[arg(long)]
        force_counter: bool,
        /// How long devices accept the release, e.g. `90d`.
        #[arg(long, value_parser = parse_period)]
        expires: Duration,
        /// Release key file; repeat to meet a threshold.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Check the signatures against this root's release role before writing anything.
        #[arg(long)]
        root: Option<PathBuf>,
        /// The release directory to create; an existing one is never overwritten.
        #[arg(long)]
        out: PathBuf,
        /// zstd level for the full image (1-19). 9 measured about 45 MB/s in 21 MB of RSS; 19 is about 5 % smaller, 20x slower and needs about 100 MB.
        #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(i32).range(1..=19))]
        zstd_level: i32,
        /// zstd worker threads (0 compresses on the main thread; each worker adds tens of MB of memory).
        #[arg(long, default_value_t = 0)]
        zstd_workers: u32,
        /// An older image to publish a delta from (repeat for several). A delta is published only
        /// when it is at most 90 % of the compressed full image.
        #[arg(long = "base", value_name = "OLD_IMAGE")]
        bases: Vec<PathBuf>,
        /// The newest delta format the fleet's agents apply: 10 (the default: as 9, and the diff's
        /// copy bytes coded with the base's first 16 MiB in their LZMA2 dictionary where that is
        /// smaller; agents from 2026-12-07 after 9), 9 (as 8, and x86-64 and
        /// AArch64 executables are diffed with their data references made absolute too, not only
        /// their calls and branches, and 32-bit Arm Thumb-2 code with its calls; agents from
        /// 2026-12-07 after 8), 8 (format 7 with raw LZMA2
        /// sections, without xz's per-stream headers; agents from 2026-12-07), 7 (as 5, and where smaller,
        /// format 6, a base of at most 16 MiB serving as the LZMA2 dictionary of the whole new image,
        /// or format 7, the diff's seeks as 32-bit words; agents from 2026-12-06), 5 (as 4, and images whose changed gzip streams this build re-compresses are
        /// diffed with them inflated; agents from 2026-12-03), 4 (format 4 where it makes the delta
        /// at least 5 % smaller, else 3; agents from 4cdd0f4), 3 (agents from 65eb94c) or 1 (every
        /// agent). An agent refuses a delta of a newer format than its own.
        #[arg(long, value_enum, default_value_t = DeltaFormat::Ten)]
        delta_format: DeltaFormat,
    },
    /// Verify a release directory against a trust root: signatures, expiry, every hash and outboard.
    Verify {
        #[arg(long)]
        root: PathBuf,
        dir: PathBuf,
    },
    /// Print a summary of a release directory.
    Show {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>().map_err(|e| e.to_string())
}

fn parse_threshold(s: &str) -> Result<(RoleName, u32), String> {
    let (r, m) = s.split_once('=').ok_or("expected ROLE=M, e.g. release=2")?;
    let m: u32 = m
        .parse()
        .map_err(|_| format!("threshold {m:?} is not a number"))?;
    Ok((r.parse()?, m))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws its own progress; daemons log their transitions.
    let default_filter = if matches!(cli.cmd, Cmd::Demo(_) | Cmd::Sim(_)) {
        "error"
    } else {
        "warn,wardswarm=info,wardswarm_node=info,wardswarm_seeder=info"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or journal gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<sim::Exit>() {
                Some(x) => ExitCode::from(x.code),
                None => ExitCode::FAILURE,
            }
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let now = cli.now.unwrap_or_else(Timestamp::now);
    match cli.cmd {
        Cmd::Keygen { out } => {
            let k = SecretKey::generate();
            k.write_new(&out)?;
            println!("{}", k.public_id());
            Ok(())
        }
        Cmd::Root(c) => root_cmd(c, now),
        Cmd::Release(c) => release_cmd(c, now),
        Cmd::Demo(a) => demo::run(&a, now),
        Cmd::Sim(a) => sim::run(&a),
        Cmd::SimTool(t) => sim::tool(&t),
        Cmd::PeerId { key } => {
            println!(
                "{}",
                SecretKey::read(&key)?.to_libp2p().public().to_peer_id()
            );
            Ok(())
        }
        Cmd::Cert(c) => cert::run(c, now),
        Cmd::Rollout(c) => client::rollout(c),
        Cmd::Token(c) => client::token_cmd(c),
        Cmd::Node { config } => daemon::run_node(config),
        Cmd::Seeder { config } => daemon::run_seeder(config),
        Cmd::Origin(OriginCmd::Serve { dir, listen }) => {
            if !dir.join(wardswarm_node::index::INDEX_FILE).is_file() {
                eprintln!(
                    "warning: {} has no index.json yet (wardswarm origin publish)",
                    dir.display()
                );
            }
            tokio::runtime::Runtime::new()?.block_on(async move {
                let stop = tokio_util::sync::CancellationToken::new();
                let l = tokio::net::TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("listening on {listen}"))?;
                println!("serving {} on http://{}/", dir.display(), l.local_addr()?);
                let s = stop.clone();
                tokio::spawn(async move {
                    use tokio::signal::unix::{signal, SignalKind};
                    if let Ok(mut t) = signal(SignalKind::terminate()) {
                        tokio::select! { _ = t.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
                    }
                    s.cancel();
                });
                wardswarm_seeder::origin::serve(dir, l, stop).await?;
                Ok(())
            })
        }
        Cmd::Origin(OriginCmd::Publish {
            dir,
            keys,
            root,
            expires,
        }) => {
            let (r, keys) = root_and_keys(&root, &keys)?;
            // Check before writing that gateways will accept this index.
            let probe = wardswarm_node::index::Index::build(
                "probe",
                1,
                now,
                now.saturating_add(expires),
                &[],
                &keys,
            )?;
            wardswarm_node::index::Index::verify(&probe.to_bytes(), &r, now, None)
                .context("these keys do not meet the trust root's release threshold")?;
            let p =
                wardswarm_seeder::origin::publish(&dir, &keys, now.saturating_add(expires), now)?;
            println!(
                "wrote {} (index version {}, {} releases, expires {})",
                p.path.display(),
                p.index.version,
                p.index.releases.len(),
                p.index.expires
            );
            for e in &p.index.releases {
                println!("  {} {} (counter {})", e.path, e.version, e.counter);
            }
            Ok(())
        }
        Cmd::Delta(DeltaCmd::Create {
            base,
            target,
            out,
            codec,
            level,
            model_min_gain,
            model_free_literals,
            gzip,
            formats_6_7,
        }) => {
            let codec = match codec.as_str() {
                "zstd" => wardswarm_node::delta::Codec::Zstd(level),
                "lzma2" => wardswarm_node::delta::Codec::Lzma2,
                _ => wardswarm_node::delta::Codec::Modeled {
                    min_gain_percent: model_min_gain,
                    free_literals: model_free_literals,
                },
            };
            // The output is claimed first, so a path in use fails before minutes of work; its bytes
            // appear there only whole (`fsutil::NewFile`).
            let mut w =
                fsutil::NewFile::create(&out, 0o644).with_context(|| out.display().to_string())?;
            let old = fsutil::read_regular(&base).with_context(|| base.display().to_string())?;
            let new =
                fsutil::read_regular(&target).with_context(|| target.display().to_string())?;
            let methods = wardswarm_node::delta::Methods {
                inflate: gzip == "auto",
                against_base: formats_6_7 == "auto",
                seek_words: formats_6_7 == "auto",
                raw_streams: formats_6_7 == "auto",
                operands: formats_6_7 == "auto",
                copies_against_base: formats_6_7 == "auto",
            };
            // Given up, so that a large pair's format-5 delta can expand them in place.
            let target_len = new.len();
            wardswarm_node::delta::create_from(old.into(), new.into(), codec, methods, &mut w)?;
            let len = w.commit().with_context(|| out.display().to_string())?;
            println!(
                "{}: {len} bytes ({:.2} % of the target)",
                out.display(),
                len as f64 * 100.0 / target_len.max(1) as f64
            );
            Ok(())
        }
        Cmd::Delta(DeltaCmd::Apply {
            base,
            delta,
            out,
            max_length,
            expect,
        }) => {
            // A delta that fails part-way (malformed, cut short) or a full disk leaves nothing at
            // the output path: its bytes appear there only whole (`fsutil::NewFile`).
            let mut w =
                fsutil::NewFile::create(&out, 0o644).with_context(|| out.display().to_string())?;
            let b = fsutil::open_regular(&base).with_context(|| base.display().to_string())?;
            let mut r = wardswarm_node::delta::apply(
                || fsutil::open_regular(&delta),
                std::io::BufReader::with_capacity(wardswarm_node::delta::BASE_BUFFER, b),
                max_length,
            )
            .with_context(|| delta.display().to_string())?;
            // Read and write errors told apart: a bad delta is not a full disk.
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            let mut hasher = blake3::Hasher::new();
            loop {
                let k = match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(e).with_context(|| format!("applying {}", delta.display()))
                    }
                };
                hasher.update(&buf[..k]);
                w.write_all(&buf[..k])
                    .with_context(|| format!("writing {}", out.display()))?;
                n += k as u64;
            }
            if n > max_length {
                bail!("the delta produced more than {max_length} bytes");
            }
            let got = wardswarm_node::hash::Hash::from(hasher.finalize());
            if let Some(want) = expect {
                if got != want {
                    // `w` is dropped uncommitted: its temporary file goes, OUT stays absent.
                    bail!(
                        "applying {} to {} gave {n} bytes hashing to {got}, not the expected {want}: \
                         the base is not the one this delta was made from, the delta is for \
                         another image, or the expected hash is not this image's; nothing was \
                         written to {}",
                        delta.display(),
                        base.display(),
                        out.display()
                    );
                }
            }
            w.commit().with_context(|| out.display().to_string())?;
            let checked = if expect.is_some() {
                ", as expected"
            } else {
                ""
            };
            println!("{}: {n} bytes, {got}{checked}", out.display());
            Ok(())
        }
        Cmd::Audit(AuditCmd::Verify { file }) => {
            let (n, head) = wardswarm_node::agent::audit::verify(&file)?;
            println!("{}: {n} records, chain intact, head {head}", file.display());
            Ok(())
        }
    }
}

/// A self-signed trust root file and signing key files.
pub(crate) fn root_and_keys(root: &Path, keys: &[PathBuf]) -> Result<(TrustRoot, Vec<SecretKey>)> {
    let r = TrustRoot::parse_self_signed(&read_root_file(root)?)
        .with_context(|| root.display().to_string())?;
    let keys = keys
        .iter()
        .map(|k| SecretKey::read(k))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((r, keys))
}

fn read_root_file(p: &Path) -> Result<Vec<u8>> {
    match fsutil::read_capped(p, DocKind::Root.max_bytes() as u64)
        .with_context(|| format!("reading {}", p.display()))?
    {
        Ok(b) => Ok(b),
        Err(len) => bail!(
            "{}: {len} bytes, over the {}-byte cap of a root document",
            p.display(),
            DocKind::Root.max_bytes()
        ),
    }
}

fn load_keys(args: &[String]) -> Result<Vec<KeyArg>> {
    args.iter()
        .map(|a| KeyArg::load(a).with_context(|| format!("key {a}")))
        .collect()
}

/// Builds one role from flags, or keeps `old` when no key was given for it.
fn role_from(
    name: RoleName,
    args: &[KeyArg],
    thresholds: &[(RoleName, u32)],
    old: Option<&Role>,
) -> Result<Role> {
    let threshold = thresholds
        .iter()
        .rev()
        .find(|(r, _)| *r == name)
        .map(|(_, m)| *m);
    if args.is_empty() {
        let Some(old) = old else {
            bail!("give at least one --{name}-key")
        };
        return Ok(Role::new(
            name,
            old.keys.clone(),
            threshold.unwrap_or(old.threshold),
        )?);
    }
    let ids = root::distinct(args.iter().map(KeyArg::public_id));
    Ok(Role::new(name, ids, threshold.unwrap_or(1))?)
}

pub(crate) fn write_new_doc(out: &Path, bytes: &[u8]) -> Result<()> {
    fsutil::write_new(out, bytes, 0o644).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!("{} already exists; refusing to overwrite it", out.display())
        } else {
            anyhow::anyhow!("writing {}: {e}", out.display())
        }
    })
}

fn print_status(r: &TrustRoot, previous: Option<&TrustRoot>) {
    for (what, have, need) in r.signature_status(previous) {
        let state = if have >= need as usize {
            "met"
        } else {
            "NOT met"
        };
        println!("  {what}: {have} of threshold {need} ({state})");
    }
}

fn root_cmd(c: RootCmd, now: Timestamp) -> Result<()> {
    match c {
        RootCmd::Init { keys, expires, out } => {
            let root_keys = load_keys(&keys.root_keys)?;
            if let Some(KeyArg::Public(id)) =
                root_keys.iter().find(|k| matches!(k, KeyArg::Public(_)))
            {
                bail!(
                    "root key {id} must be a key file: version 1 is signed by all of its root keys"
                );
            }
            let release_keys = load_keys(&keys.release_keys)?;
            let membership_keys = load_keys(&keys.membership_keys)?;
            let mut r = TrustRoot::new(
                1,
                now.saturating_add(expires),
                role_from(RoleName::Root, &root_keys, &keys.thresholds, None)?,
                role_from(RoleName::Release, &release_keys, &keys.thresholds, None)?,
                role_from(
                    RoleName::Membership,
                    &membership_keys,
                    &keys.thresholds,
                    None,
                )?,
            )?;
            for k in &root_keys {
                if let KeyArg::Secret(s) = k {
                    r.sign(s, None)?;
                }
            }
            r.check_self_signed()?;
            write_new_doc(&out, &r.to_bytes())?;
            println!(
                "wrote trust root version 1 to {} (expires {})",
                out.display(),
                r.expires
            );
            Ok(())
        }
        RootCmd::Sign {
            root: path,
            keys,
            previous,
        } => {
            let mut r = TrustRoot::parse_unverified(&read_root_file(&path)?)
                .with_context(|| path.display().to_string())?;
            let prev = match &previous {
                Some(p) => Some(
                    TrustRoot::parse_unverified(&read_root_file(p)?)
                        .with_context(|| p.display().to_string())?,
                ),
                None => None,
            };
            for k in &keys {
                let s = SecretKey::read(k)?;
                r.sign(&s, prev.as_ref())
                    .with_context(|| format!("signing with {}", k.display()))?;
            }
            fsutil::replace(&path, &r.to_bytes(), 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
            println!("signed {} (version {})", path.display(), r.version);
            print_status(&r, prev.as_ref());
            Ok(())
        }
        RootCmd::Rotate {
            root: old_path,
            keys,
            signers,
            expires,
            out,
        } => {
            let old = TrustRoot::parse_self_signed(&read_root_file(&old_path)?)
                .with_context(|| old_path.display().to_string())?;
            let root_keys = load_keys(&keys.root_keys)?;
            let release_keys = load_keys(&keys.release_keys)?;
            let membership_keys = load_keys(&keys.membership_keys)?;
            let mut next = old.successor(
                now.saturating_add(expires),
                role_from(
                    RoleName::Root,
                    &root_keys,
                    &keys.thresholds,
                    Some(&old.root),
                )?,
                role_from(
                    RoleName::Release,
                    &release_keys,
                    &keys.thresholds,
                    Some(&old.release),
                )?,
                role_from(
                    RoleName::Membership,
                    &membership_keys,
                    &keys.thresholds,
                    Some(&old.membership),
                )?,
            )?;
            for k in &root_keys {
                if let KeyArg::Secret(s) = k {
                    next.sign(s, Some(&old))?;
                }
            }
            for p in &signers {
                let s = SecretKey::read(p)?;
                next.sign(&s, Some(&old))
                    .with_context(|| format!("signing with {}", p.display()))?;
            }
            write_new_doc(&out, &next.to_bytes())?;
            println!(
                "wrote trust root version {} to {}",
                next.version,
                out.display()
            );
            print_status(&next, Some(&old));
            if old.verify_successor(&next.to_bytes()).is_err() {
                println!("devices will refuse it until both thresholds are met: add signatures with `wardswarm root sign --root {} --previous {} --key KEY`", out.display(), old_path.display());
            }
            Ok(())
        }
        RootCmd::Verify { trusted, roots } => {
            let mut iter = roots.iter();
            let mut current = match &trusted {
                Some(t) => TrustRoot::parse_self_signed(&read_root_file(t)?)
                    .with_context(|| t.display().to_string())?,
                None => {
                    // `required = true` guarantees one path.
                    let first = iter.next().context("no root given")?;
                    let r = TrustRoot::parse_self_signed(&read_root_file(first)?)
                        .with_context(|| first.display().to_string())?;
                    println!(
                        "{}: version {} is signed by its root threshold",
                        first.display(),
                        r.version
                    );
                    r
                }
            };
            for p in iter {
                current = current
                    .verify_successor(&read_root_file(p)?)
                    .with_context(|| p.display().to_string())?;
                println!(
                    "{}: version {} follows the trusted chain",
                    p.display(),
                    current.version
                );
            }
            current.check_fresh(now).context("the newest root")?;
            println!(
                "ok: trust root version {} valid until {}",
                current.version, current.expires
            );
            Ok(())
        }
        RootCmd::Show { root: p, json } => {
            let r = TrustRoot::parse_unverified(&read_root_file(&p)?)
                .with_context(|| p.display().to_string())?;
            if json {
                let role = |ro: &Role| serde_json::json!({"keys": ro.keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), "threshold": ro.threshold});
                let v = serde_json::json!({
                    "version": r.version,
                    "expires": r.expires.to_string(),
                    "fingerprint": r.fingerprint().to_string(),
                    "roles": {"root": role(&r.root), "release": role(&r.release), "membership": role(&r.membership)},
                    "signers": r.signers().iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "trust root version {} (fingerprint {})",
                    r.version,
                    r.fingerprint()
                );
                println!("expires {}", r.expires);
                for name in RoleName::ALL {
                    let ro = r.role(name);
                    println!("{name} role: {} of {}", ro.threshold, ro.keys.len());
                    for k in &ro.keys {
                        println!("  {k}");
                    }
                }
                println!("signed by:");
                for k in r.signers() {
                    println!("  {k}");
                }
            }
            Ok(())
        }
    }
}

fn release_cmd(c: ReleaseCmd, now: Timestamp) -> Result<()> {
    match c {
        ReleaseCmd::Build {
            target,
            product,
            hardware,
            version,
            counter,
            expires,
            keys,
            root,
            out,
            zstd_level,
            zstd_workers,
            bases,
            delta_format,
            force_counter,
        } => {
            if counter > MAX_PLAIN_COUNTER && !force_counter {
                bail!(
                    "--counter {counter} is above 2^53 ({MAX_PLAIN_COUNTER}): a device that commits it \
                     has almost no counters left for later releases (none at all at {}), and only \
                     re-provisioning lowers its floor. Use the next counter after your last \
                     release, or pass --force-counter if you mean it",
                    u64::MAX
                );
            }
            let keys = keys
                .iter()
                .map(|k| SecretKey::read(k))
                .collect::<Result<Vec<_>, _>>()?;
            let root = match &root {
                Some(p) => Some(
                    TrustRoot::parse_self_signed(&read_root_file(p)?)
                        .with_context(|| p.display().to_string())?,
                ),
                None => None,
            };
            let req = BuildRequest {
                target,
                product,
                hardware,
                version,
                counter,
                created: now,
                expires: now.saturating_add(expires),
                keys,
                out,
                zstd_level,
                zstd_workers,
                root,
                bases,
                delta_codec: match delta_format {
                    DeltaFormat::One => {
                        wardswarm_node::delta::Codec::Zstd(wardswarm_node::delta::LEVEL)
                    }
                    DeltaFormat::Three => wardswarm_node::delta::Codec::Lzma2,
                    DeltaFormat::Four
                    | DeltaFormat::Five
                    | DeltaFormat::Seven
                    | DeltaFormat::Eight
                    | DeltaFormat::Nine
                    | DeltaFormat::Ten => wardswarm_node::delta::Codec::MODELED,
                },
                delta_methods: wardswarm_node::delta::Methods {
                    inflate: matches!(
                        delta_format,
                        DeltaFormat::Five
                            | DeltaFormat::Seven
                            | DeltaFormat::Eight
                            | DeltaFormat::Nine
                            | DeltaFormat::Ten
                    ),
                    against_base: matches!(
                        delta_format,
                        DeltaFormat::Seven
                            | DeltaFormat::Eight
                            | DeltaFormat::Nine
                            | DeltaFormat::Ten
                    ),
                    seek_words: matches!(
                        delta_format,
                        DeltaFormat::Seven
                            | DeltaFormat::Eight
                            | DeltaFormat::Nine
                            | DeltaFormat::Ten
                    ),
                    raw_streams: matches!(
                        delta_format,
                        DeltaFormat::Eight | DeltaFormat::Nine | DeltaFormat::Ten
                    ),
                    operands: matches!(delta_format, DeltaFormat::Nine | DeltaFormat::Ten),
                    copies_against_base: matches!(delta_format, DeltaFormat::Ten),
                },
            };
            let report = release::build(&req)?;
            let m = &report.manifest.manifest;
            let mb = m.target.length as f64 / 1e6;
            println!(
                "built {} in {:.1} s ({:.1} MB/s of image)",
                req.out.display(),
                report.seconds,
                mb / report.seconds.max(1e-9)
            );
            println!("{}", release::Summary(&report.manifest));
            Ok(())
        }
        ReleaseCmd::Verify { root, dir } => {
            let r = TrustRoot::parse_self_signed(&read_root_file(&root)?)
                .with_context(|| root.display().to_string())?;
            let rep = release::verify_dir(&dir, Some(&r), Some(now))?;
            let m = &rep.manifest.manifest;
            println!(
                "ok: {} {} (counter {}) signed by the release role of root version {}; {} artifact(s) verified",
                m.product, m.version, m.counter, r.version, rep.artifacts_checked
            );
            Ok(())
        }
        ReleaseCmd::Show { dir, json } => {
            let sm = release::read_manifest(&dir)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&release::summary_json(&sm))?
                );
            } else {
                println!("{}", release::Summary(&sm));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
