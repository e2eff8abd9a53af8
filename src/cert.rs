//! `wardswarm cert`: membership certificates and the ward's revocation list.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use wardswarm_node::{
    fsutil,
    membership::{Certificate, Role},
    revocation::{RevocationList, Revoked},
    signed::DocKind,
    Timestamp,
};

use crate::{args::parse_period, root_and_keys, write_new_doc};

/// Who signs: the membership keys of a trust root, for one ward.
#[derive(clap::Args, Debug)]
pub(crate) struct Signer {
    /// The trust root (the keys must meet its membership threshold).
    #[arg(long)]
    root: PathBuf,
    /// A membership key file; repeat to meet the threshold.
    #[arg(long = "key", required = true)]
    keys: Vec<PathBuf>,
    /// The ward id.
    #[arg(long)]
    ward: String,
}

#[derive(Subcommand, Debug)]
pub(crate) enum CertCmd {
    /// Issue a membership certificate for a node's peer id, signed by membership keys.
    Issue {
        #[command(flatten)]
        signer: Signer,
        /// The device id (or gateway name).
        #[arg(long)]
        device: String,
        /// device or gateway.
        #[arg(long, default_value = "device")]
        role: String,
        /// The node's libp2p peer id (`wardswarm peer-id --key FILE`).
        #[arg(long)]
        peer: String,
        /// How long the certificate is valid: a number and a unit, e.g. `365d`, `30d`, `12h`.
        #[arg(long, value_parser = parse_period)]
        expires: Duration,
        /// Output file; an existing file is never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Revoke certificates before they expire: writes the ward's next revocation list (serial + 1,
    /// signed by membership keys) over `--list`, atomically. Give the new list to the gateway (its
    /// `revocations` file, by default `<state>/revocations.json`); it puts the list in force within
    /// seconds and passes it to every device.
    Revoke {
        #[command(flatten)]
        signer: Signer,
        /// The revocation list: read (and verified) if it exists, then replaced by the next one.
        #[arg(long)]
        list: PathBuf,
        /// A certificate to revoke (its peer id and device id are taken from it); repeatable.
        #[arg(long = "certificate", value_name = "FILE")]
        certificates: Vec<PathBuf>,
        /// A peer id to revoke, when its certificate is not at hand; repeatable.
        #[arg(long = "peer", value_name = "PEER_ID")]
        peers: Vec<String>,
        /// A peer id to take off the list again (revoked by mistake); repeatable.
        #[arg(long = "reinstate", value_name = "PEER_ID")]
        reinstate: Vec<String>,
    },
}

pub(crate) fn run(c: CertCmd, now: Timestamp) -> Result<()> {
    match c {
        CertCmd::Issue {
            signer: Signer { root, keys, ward },
            device,
            role,
            peer,
            expires,
            out,
        } => {
            let (r, keys) = root_and_keys(&root, &keys)?;
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            let cert = Certificate::issue(
                &ward,
                &device,
                role,
                &peer,
                now.saturating_add(expires),
                &keys,
            )?;
            cert.verify(&r, &peer, &ward, now)
                .context("the certificate would not be accepted")?;
            write_new_doc(&out, &cert.to_bytes())?;
            println!(
                "wrote membership certificate for {device} ({}) in ward {ward} to {}",
                role.as_str(),
                out.display()
            );
            Ok(())
        }
        CertCmd::Revoke {
            signer: Signer { root, keys, ward },
            list,
            certificates,
            peers,
            reinstate,
        } => {
            if certificates.is_empty() && peers.is_empty() && reinstate.is_empty() {
                bail!("nothing to do: give --certificate, --peer or --reinstate");
            }
            let (r, keys) = root_and_keys(&root, &keys)?;
            let max = DocKind::Revocations.max_bytes() as u64;
            let old = match fsutil::read_capped(&list, max) {
                Ok(Ok(b)) => Some(
                    RevocationList::parse_verified(&b, &r, &ward)
                        .with_context(|| format!("the current list {}", list.display()))?,
                ),
                Ok(Err(len)) => bail!("{}: {len} bytes, over the {max}-byte cap", list.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => bail!("reading {}: {e}", list.display()),
            };
            let mut entries: Vec<Revoked> =
                old.as_ref().map(|l| l.revoked.clone()).unwrap_or_default();
            for c in &certificates {
                let b = fsutil::read_capped(c, DocKind::Membership.max_bytes() as u64)
                    .with_context(|| format!("reading {}", c.display()))?
                    .map_err(|len| {
                        anyhow::anyhow!("{}: {len} bytes is no certificate", c.display())
                    })?;
                let cert = Certificate::parse(&b).with_context(|| c.display().to_string())?;
                if cert.ward != ward {
                    bail!("{} is for ward {:?}, not {ward:?}", c.display(), cert.ward);
                }
                entries.push(Revoked {
                    peer: cert.peer.clone(),
                    device: cert.device.clone(),
                });
            }
            for p in &peers {
                entries.push(Revoked {
                    peer: p.clone(),
                    device: "unknown".into(),
                });
            }
            for p in &reinstate {
                if !entries.iter().any(|e| &e.peer == p) {
                    bail!("{p} is not on the list; nothing to reinstate");
                }
                entries.retain(|e| &e.peer != p);
            }
            let serial = old.as_ref().map_or(1, |l| l.serial.saturating_add(1));
            let next = RevocationList::issue(&ward, serial, now, entries, &keys)?;
            next.verify(&r, &ward)
                .context("the new list would not be accepted")?;
            if let Some(dir) = list.parent().filter(|d| !d.as_os_str().is_empty()) {
                fsutil::create_dirs(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            fsutil::replace(&list, &next.to_bytes(), 0o644)
                .with_context(|| format!("writing {}", list.display()))?;
            println!(
                "wrote revocation list serial {serial} for ward {ward} to {}: {} peer(s) revoked",
                list.display(),
                next.revoked.len()
            );
            for e in &next.revoked {
                println!("  {} ({})", e.peer, e.device);
            }
            Ok(())
        }
    }
}
