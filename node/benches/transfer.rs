//! Transfer benchmark (not a test): one artifact between two nodes on loopback, unthrottled.
//!
//! ```sh
//! cargo bench -p wardswarm-node --bench transfer -- --size 1GiB
//! ```
//!
//! Reports, in one run: our throughput as a ratio to a plain tokio TCP copy of the same bytes and to
//! libp2p's own ceiling (a bare yamux stream over the same TCP + noise stack); CPU seconds per GB on
//! each side; bytes on the wire per artifact byte (bao proofs, our framing, and everything below it as
//! counted on the `lo` interface); and the fetching node's peak RSS (it runs as a child process).

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{identity::Keypair, Multiaddr, StreamProtocol};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wardswarm_node::{
    membership::{Certificate, Role},
    net::{self as node, Config},
    outboard,
    root::TrustRoot,
    store::Store,
    testkit, Hash, SecretKey, Timestamp,
};

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// User + system CPU seconds of this process, from /proc/self/stat (clock ticks of 1/100 s, the
/// Linux default `CLK_TCK`; verified with `getconf CLK_TCK` on the bench machine).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn lo_bytes() -> u64 {
    std::fs::read_to_string("/proc/net/dev")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.trim_start().starts_with("lo:"))
                .and_then(|l| l.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn parse_size(s: &str) -> u64 {
    let s = s.trim();
    let (n, mult) = if let Some(n) = s.strip_suffix("GiB") {
        (n, 1u64 << 30)
    } else if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else {
        (s, 1)
    };
    n.trim().parse::<u64>().unwrap_or(256) * mult
}

fn world() -> (TrustRoot, SecretKey) {
    let keys = testkit::TestKeys::default();
    (
        keys.root(Timestamp::now(), Duration::from_secs(86_400)),
        keys.membership,
    )
}

fn cert(m: &SecretKey, key: &Keypair, name: &str, role: Role) -> Certificate {
    Certificate::issue(
        "bench",
        name,
        role,
        &key.public().to_peer_id().to_string(),
        Timestamp::now().saturating_add(Duration::from_secs(86_400)),
        std::slice::from_ref(m),
    )
    .expect("cert")
}

fn config(boot: Vec<Multiaddr>) -> Config {
    Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")],
        bootstrap: boot,
        mdns: false,
        ward: "bench".into(),
        ..Config::default()
    }
}

/// Child process: fetch the artifact from `boot`, print JSON figures.
async fn child(dir: PathBuf, boot: Multiaddr, root: Hash, len: u64) -> R<()> {
    let (trust, m) = world();
    let key = Keypair::generate_ed25519();
    let c = cert(&m, &key, "fetcher", Role::Device);
    let store = Arc::new(Store::open(dir.join("fetcher"))?);
    let (h, _j) = node::spawn(config(vec![boot]), key, &c, trust, store.clone())?;
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    h.fetch(root, len).await?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let received = h.metrics().received_total(&root.short(), "gateway");
    println!(
        "{}",
        serde_json::json!({"seconds": secs, "cpu": cpu, "rss_kib": peak_rss_kib(), "received": received})
    );
    h.shutdown().await?;
    Ok(())
}

fn write_artifact(path: &Path, len: u64) -> R<()> {
    Ok(testkit::write_stream(
        path,
        len,
        testkit::Rng::from_state(0x2545_f491_4f6c_dd1d),
    )?)
}

/// Plain tokio TCP: file -> socket -> file (or discarded when `dst` is None).
async fn tcp_copy(src: &Path, dst: Option<&Path>) -> R<(f64, f64)> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let dst = dst.map(Path::to_path_buf);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let recv = tokio::spawn(async move {
        let (mut s, _) = l.accept().await?;
        let mut f = match &dst {
            Some(d) => Some(std::fs::File::create(d)?),
            None => None,
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if let Some(f) = f.as_mut() {
                f.write_all(&buf[..n])?;
            }
        }
        Ok::<_, std::io::Error>(())
    });
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let mut f = std::fs::File::open(src)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await?;
    }
    s.shutdown().await?;
    recv.await??;
    Ok((t.elapsed().as_secs_f64(), cpu_seconds() - cpu0))
}

/// Bare libp2p: one yamux stream over TCP + noise, file -> stream -> file.
async fn libp2p_copy(src: &Path, dst: Option<&Path>) -> R<(f64, f64)> {
    const P: StreamProtocol = StreamProtocol::new("/bench/copy/1");
    let mk = || -> R<libp2p::Swarm<libp2p_stream::Behaviour>> {
        Ok(libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default().nodelay(true),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build())
    };
    let mut a = mk()?;
    let mut b = mk()?;
    b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = b.select_next_some().await
        {
            break address;
        }
    };
    let b_id = *b.local_peer_id();
    let mut incoming = b
        .behaviour()
        .new_control()
        .accept(P)
        .map_err(|e| e.to_string())?;
    let mut control = a.behaviour().new_control();
    a.dial(addr.with_p2p(b_id).map_err(|_| "addr")?)?;
    tokio::spawn(async move {
        loop {
            a.select_next_some().await;
        }
    });
    tokio::spawn(async move {
        loop {
            b.select_next_some().await;
        }
    });
    let dst = dst.map(Path::to_path_buf);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    let recv = tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.ok_or("no stream")?;
        let mut f = match &dst {
            Some(d) => Some(std::fs::File::create(d)?),
            None => None,
        };
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            if let Some(f) = f.as_mut() {
                f.write_all(&buf[..n])?;
            }
        }
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
    });
    let mut s = control
        .open_stream(b_id, P)
        .await
        .map_err(|e| e.to_string())?;
    let mut f = std::fs::File::open(src)?;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).await?;
    }
    s.close().await?;
    recv.await.map_err(|e| e.to_string())??;
    Ok((t.elapsed().as_secs_f64(), cpu_seconds() - cpu0))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> R<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Ok(spec) = std::env::var("WARDSWARM_BENCH_CHILD") {
        let v: Vec<&str> = spec.split('|').collect();
        return child(
            PathBuf::from(v[0]),
            v[1].parse()?,
            v[2].parse().map_err(|e| format!("{e}"))?,
            v[3].parse()?,
        )
        .await;
    }
    let size = args
        .iter()
        .position(|a| a == "--size")
        .and_then(|i| args.get(i + 1))
        .map(|s| parse_size(s))
        .unwrap_or(256 << 20);
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    eprintln!("writing a {size}-byte artifact and its outboard");
    write_artifact(&d.join("art"), size)?;
    let ob = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(d.join("art.obao"))?;
    let root = outboard::create(std::fs::File::open(d.join("art"))?, size, &ob)?;

    eprintln!("baselines: plain tokio TCP and a bare libp2p yamux stream over TCP + noise");
    let (tcp_s, tcp_cpu) = tcp_copy(&d.join("art"), None).await?;
    let (tcpf_s, tcpf_cpu) = tcp_copy(&d.join("art"), Some(&d.join("out"))).await?;
    std::fs::remove_file(d.join("out"))?;
    let (p2p_s, p2p_cpu) = libp2p_copy(&d.join("art"), None).await?;
    let (p2pf_s, p2pf_cpu) = libp2p_copy(&d.join("art"), Some(&d.join("out"))).await?;
    std::fs::remove_file(d.join("out"))?;

    eprintln!("wardswarm: seed in this process, fetcher in a child process");
    let (trust, m) = world();
    let key = Keypair::generate_ed25519();
    let c = cert(&m, &key, "seed", Role::Gateway);
    let store = Arc::new(Store::open(d.join("seed"))?);
    store.import(root, size, &d.join("art"), &d.join("art.obao"))?;
    let (h, _j) = node::spawn(config(vec![]), key, &c, trust, store)?;
    let addr = loop {
        if let Some(a) = h.listen_addrs().await?.into_iter().next() {
            break a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lo0 = lo_bytes();
    let cpu0 = cpu_seconds();
    let out = tokio::process::Command::new(std::env::current_exe()?)
        .env(
            "WARDSWARM_BENCH_CHILD",
            format!("{}|{}|{}|{}", d.display(), addr, root, size),
        )
        .output()
        .await?;
    let seed_cpu = cpu_seconds() - cpu0;
    let lo = lo_bytes() - lo0;
    if !out.status.success() {
        return Err(format!("fetcher failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let secs = v["seconds"].as_f64().unwrap_or(f64::NAN);
    let gb = size as f64 / 1e9;
    let mbps = |s: f64| size as f64 / 1e6 / s;
    let sent = h.metrics().sent_total(&root.short(), "peer");
    let fetch_cpu = v["cpu"].as_f64().unwrap_or(f64::NAN);
    let report = serde_json::json!({
        "artifact_bytes": size,
        "wardswarm_mb_s": mbps(secs),
        "tcp_copy_discard_mb_s": mbps(tcp_s),
        "tcp_copy_to_file_mb_s": mbps(tcpf_s),
        "libp2p_stream_discard_mb_s": mbps(p2p_s),
        "libp2p_stream_to_file_mb_s": mbps(p2pf_s),
        "ratio_to_tcp_discard": tcp_s / secs,
        "ratio_to_tcp_to_file": tcpf_s / secs,
        "ratio_to_libp2p_stream_discard": p2p_s / secs,
        "ratio_to_libp2p_stream_to_file": p2pf_s / secs,
        "cpu_s_per_gb_seed": seed_cpu / gb,
        "cpu_s_per_gb_fetcher": fetch_cpu / gb,
        "cpu_s_per_gb_tcp_discard_both_sides": tcp_cpu / gb,
        "cpu_s_per_gb_tcp_to_file_both_sides": tcpf_cpu / gb,
        "cpu_s_per_gb_libp2p_discard_both_sides": p2p_cpu / gb,
        "cpu_s_per_gb_libp2p_to_file_both_sides": p2pf_cpu / gb,
        "app_bytes_per_artifact_byte": sent as f64 / size as f64,
        "lo_bytes_per_artifact_byte": lo as f64 / size as f64,
        "fetcher_peak_rss_mib": v["rss_kib"].as_f64().unwrap_or(f64::NAN) / 1024.0,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    h.shutdown().await?;
    Ok(())
}
