//! What the ward needs from the origin: a pure function of the verified releases and the devices'
//! reports. For each device, the newest release for its hardware above its counter, as a delta from
//! the image it reports if the release has one, else the full image; with prefetch, also the newest
//! full image for every hardware id the releases name. Each artifact once.

use std::collections::BTreeSet;

use wardswarm_node::{agent::runtime::Report, hash::Hash, manifest::Manifest, Timestamp};

use super::state::{Records, ReleaseStatus};

/// A verified, unexpired release and where it lives on the origin.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Its folder on the origin.
    pub path: String,
    /// Its manifest (signatures already checked).
    pub manifest: Manifest,
}

/// One needed artifact and where it lives on the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// The release folder on the origin.
    pub path: String,
    /// The artifact's bao root.
    pub root: Hash,
    /// Its signed length.
    pub length: u64,
    /// Who needs it (for the log).
    pub why: String,
}

/// The releases a plan can choose from: verified and unexpired at `now`.
pub fn candidates(r: &Records, now: Timestamp) -> Vec<Candidate> {
    r.releases
        .values()
        .filter(|r| r.status == ReleaseStatus::Verified && r.expires.is_none_or(|e| now < e))
        .filter_map(|r| {
            let sm =
                wardswarm_node::manifest::SignedManifest::parse(r.bytes.as_deref()?.as_bytes())
                    .ok()?;
            Some(Candidate {
                path: r.path.clone(),
                manifest: sm.manifest,
            })
        })
        .collect()
}

/// What to download, in order: devices first (in the order given), then prefetch.
pub fn needed<'a>(
    releases: &[Candidate],
    devices: impl IntoIterator<Item = (&'a str, &'a Report)>,
    prefetch: bool,
) -> Vec<Need> {
    let mut out: Vec<Need> = Vec::new();
    let mut add = |why: String, path: &str, a: &wardswarm_node::manifest::Artifact| {
        if !out.iter().any(|n| n.root == a.root) {
            out.push(Need {
                path: path.into(),
                root: a.root,
                length: a.length,
                why,
            });
        }
    };
    for (id, report) in devices {
        let best = releases
            .iter()
            .filter(|c| {
                c.manifest.counter > report.counter
                    && c.manifest.hardware.contains(&report.hardware)
            })
            .max_by_key(|c| c.manifest.counter);
        if let Some(c) = best {
            let m = &c.manifest;
            // What the device says it fetches, if that release has it: the full image after its
            // delta did not install. Else the delta from its image, else the full image.
            let fetching = report.artifact.and_then(|root| m.artifact(&root));
            if let Some(a) = fetching.or_else(|| m.delta_from(&report.image).or_else(|| m.full())) {
                add(format!("device {id}"), &c.path, a);
            }
        }
    }
    if prefetch {
        let hardware: BTreeSet<&str> = releases
            .iter()
            .flat_map(|c| c.manifest.hardware.iter().map(String::as_str))
            .collect();
        for h in hardware {
            let newest = releases
                .iter()
                .filter(|c| c.manifest.hardware.iter().any(|x| x == h))
                .max_by_key(|c| c.manifest.counter);
            if let Some(c) = newest {
                if let Some(a) = c.manifest.full() {
                    add(format!("prefetch for {h}"), &c.path, a);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardswarm_node::{
        agent::{machine::DeviceState, slots::SlotId},
        manifest::{Artifact, ArtifactKind, Compression, Target},
    };

    fn artifact(tag: &[u8], kind: ArtifactKind) -> Artifact {
        Artifact {
            kind,
            compression: Compression::Zstd,
            length: 100,
            root: Hash::of(tag),
        }
    }

    fn release(counter: u64, hardware: &[&str], base: Option<Hash>) -> Candidate {
        let mut artifacts = vec![artifact(
            format!("full-{counter}").as_bytes(),
            ArtifactKind::Full,
        )];
        if let Some(base) = base {
            artifacts.push(artifact(
                format!("delta-{counter}").as_bytes(),
                ArtifactKind::Delta { base },
            ));
        }
        Candidate {
            path: format!("releases/{counter}"),
            manifest: Manifest {
                product: "pump".into(),
                hardware: hardware.iter().map(|h| h.to_string()).collect(),
                version: format!("{counter}.0"),
                counter,
                created: Timestamp::from_unix(0),
                expires: Timestamp::from_unix(1),
                target: Target {
                    hash: Hash::of(b"target"),
                    length: 1000,
                },
                artifacts,
            },
        }
    }

    fn report(hardware: &str, counter: u64, image: &[u8]) -> Report {
        Report {
            hardware: hardware.into(),
            product: None,
            version: "x".into(),
            counter,
            image: Hash::of(image),
            slot: SlotId::A,
            state: DeviceState::Idle,
            target: None,
            artifact: None,
            progress: None,
            last: None,
            bytes_from_gateway: 0,
            bytes_from_peers: 0,
            audit_lines: 0,
            labels: vec![],
            gated: None,
            gated_detail: None,
            held: None,
            gated_ms: 0,
        }
    }

    #[test]
    fn each_device_gets_its_newest_release_as_a_delta_when_one_fits_its_image() {
        let rels = [
            release(2, &["a"], None),
            release(3, &["a"], Some(Hash::of(b"img-1"))),
            release(9, &["b"], None),
        ];
        let on_base = report("a", 1, b"img-1");
        let other_base = report("a", 1, b"img-x");
        let n = needed(&rels, [("d1", &on_base), ("d2", &other_base)], false);
        assert_eq!(
            n.iter().map(|n| n.root).collect::<Vec<_>>(),
            [Hash::of(b"delta-3"), Hash::of(b"full-3")]
        );
        assert_eq!(n[0].path, "releases/3");
        assert_eq!(n[0].why, "device d1");
    }

    /// A device whose delta did not install fetches the release's full image, and says so.
    #[test]
    fn a_device_that_fell_back_to_the_full_image_gets_it() {
        let rels = [release(3, &["a"], Some(Hash::of(b"img-1")))];
        let mut fell_back = report("a", 1, b"img-1");
        fell_back.artifact = Some(Hash::of(b"full-3"));
        let n = needed(&rels, [("d1", &fell_back)], false);
        assert_eq!(
            n.iter().map(|n| n.root).collect::<Vec<_>>(),
            [Hash::of(b"full-3")]
        );
        // An artifact the newest release does not have is no reason to fetch anything else.
        fell_back.artifact = Some(Hash::of(b"elsewhere"));
        let n = needed(&rels, [("d1", &fell_back)], false);
        assert_eq!(
            n.iter().map(|n| n.root).collect::<Vec<_>>(),
            [Hash::of(b"delta-3")]
        );
    }

    #[test]
    fn up_to_date_or_foreign_devices_need_nothing_and_artifacts_come_once() {
        let rels = [release(3, &["a"], None)];
        let current = report("a", 3, b"i");
        let foreign = report("c", 1, b"i");
        assert!(needed(&rels, [("d", &current), ("e", &foreign)], false).is_empty());
        let old1 = report("a", 1, b"i");
        let old2 = report("a", 2, b"j");
        assert_eq!(needed(&rels, [("d", &old1), ("e", &old2)], false).len(), 1);
    }

    #[test]
    fn prefetch_takes_the_newest_full_image_per_hardware() {
        let rels = [
            release(2, &["a"], None),
            release(4, &["a", "b"], None),
            release(5, &["c"], None),
        ];
        let n = needed(&rels, [], true);
        let roots: Vec<Hash> = n.iter().map(|n| n.root).collect();
        assert_eq!(roots, [Hash::of(b"full-4"), Hash::of(b"full-5")]);
        assert!(needed(&rels, [], false).is_empty());
    }
}
