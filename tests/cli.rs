//! End-to-end tests of the `wardswarm` CLI, as a device maker would use it.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wardswarm"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run wardswarm")
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        o.status.success(),
        "wardswarm {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a command that must fail; returns its stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let o = run(dir, args);
    assert!(
        !o.status.success(),
        "wardswarm {args:?} should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("e").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A deterministic 3 MiB image: pseudo-random bytes then zeros, so zstd has something to do.
fn write_image(path: &Path, seed: u64) {
    let mut x = wardswarm_node::testkit::Rng::from_state(seed | 1);
    let mut v: Vec<u8> = (0..2 * 1024 * 1024).map(|_| x.next_u64() as u8).collect();
    v.resize(3 * 1024 * 1024, 0);
    fs::write(path, v).expect("write image");
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    /// Keys, a root and an image in a fresh directory.
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for k in ["root.key", "release.key", "membership.key"] {
            let id = ok(d, &["keygen", "--out", k]);
            assert!(
                id.trim().starts_with("ed25519:") && id.trim().len() == 8 + 64,
                "public id printed: {id}"
            );
            assert_eq!(
                fs::metadata(d.join(k)).expect("key").permissions().mode() & 0o777,
                0o600
            );
        }
        ok(
            d,
            &[
                "root",
                "init",
                "--root-key",
                "root.key",
                "--release-key",
                "release.key",
                "--membership-key",
                "membership.key",
                "--expires",
                "365d",
                "--out",
                "root.json",
            ],
        );
        write_image(&d.join("image.img"), 42);
        Setup { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn build(&self, out: &str, extra: &[&str]) -> Output {
        let mut args = build_args("4.2.1", "42", out);
        args.extend(["--root", "root.json"].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(self.path(), &args)
    }
    /// Files and folders in the directory, hidden ones included.
    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn artifact_path(dir: &Path, release: &str) -> PathBuf {
    let show = ok(dir, &["release", "show", release, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&show).expect("json");
    dir.join(release)
        .join(v["artifacts"][0]["file"].as_str().expect("file"))
}

fn flip(path: &Path, offset: u64) {
    let mut b = fs::read(path).expect("read");
    let i = offset.min(b.len() as u64 - 1) as usize;
    b[i] ^= 0x20;
    fs::write(path, b).expect("write");
}

/// `release build` of `image.img` as the tests' device maker runs it, signed with `release.key`.
fn build_args(version: &str, counter: &str, out: &str) -> Vec<String> {
    [
        "release",
        "build",
        "--target",
        "image.img",
        "--product",
        "infusion-pump",
        "--hardware",
        "pump-rev-c,pump-rev-d",
        "--version",
        version,
        "--counter",
        counter,
        "--expires",
        "90d",
        "--key",
        "release.key",
        "--out",
        out,
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn keygen_refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    ok(dir.path(), &["keygen", "--out", "k"]);
    let before = fs::read(dir.path().join("k")).expect("key");
    let err = fails(dir.path(), &["keygen", "--out", "k"]);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(fs::read(dir.path().join("k")).expect("key"), before);
}

#[test]
fn build_verify_show_and_tampering() {
    let s = Setup::new();
    let d = s.path();
    let o = s.build("rel", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = ok(d, &["release", "verify", "--root", "root.json", "rel"]);
    assert!(out.starts_with("ok:"), "{out}");

    let v: serde_json::Value =
        serde_json::from_str(&ok(d, &["release", "show", "rel", "--json"])).expect("json");
    let img = fs::read(d.join("image.img")).expect("image");
    assert_eq!(
        v["target"]["hash"],
        format!("blake3:{}", blake3::hash(&img).to_hex())
    );
    assert_eq!(v["target"]["length"], img.len() as u64);
    let a = &v["artifacts"][0];
    assert_eq!(a["kind"], "full");
    assert!(a["base"].is_null());
    let art = fs::read(d.join("rel").join(a["file"].as_str().expect("file"))).expect("artifact");
    assert_eq!(a["length"], art.len() as u64);
    assert_eq!(a["root"], format!("blake3:{}", blake3::hash(&art).to_hex()));
    assert!(ok(d, &["release", "show", "rel"]).contains("infusion-pump 4.2.1 (counter 42)"));

    // One flipped byte in the first, a middle and the last chunk group of the artifact.
    let len = art.len() as u64;
    for (offset, group) in [
        (0, 0),
        (len / 2, len / 2 / 16384),
        (len - 1, (len - 1) / 16384),
    ] {
        fs::remove_dir_all(d.join("t")).ok();
        copy_dir(&d.join("rel"), &d.join("t"));
        flip(&artifact_path(d, "t"), offset);
        let err = fails(d, &["release", "verify", "--root", "root.json", "t"]);
        assert!(
            err.contains(&format!("chunk group {group} ")) && err.contains("artifacts/"),
            "{err}"
        );
    }
    // A flipped byte in the manifest: refused, naming the manifest.
    fs::remove_dir_all(d.join("t")).ok();
    copy_dir(&d.join("rel"), &d.join("t"));
    let m = d.join("t/manifest.json");
    let text = fs::read_to_string(&m)
        .expect("manifest")
        .replace("\"counter\":42", "\"counter\":43");
    fs::write(&m, text).expect("write");
    let err = fails(d, &["release", "verify", "--root", "root.json", "t"]);
    assert!(
        err.contains("manifest.json") && err.contains("does not verify"),
        "{err}"
    );
    // A flipped byte in the outboard names the outboard.
    fs::remove_dir_all(d.join("t")).ok();
    copy_dir(&d.join("rel"), &d.join("t"));
    let ob = PathBuf::from(format!("{}.obao", artifact_path(d, "t").display()));
    flip(&ob, 100);
    let err = fails(d, &["release", "verify", "--root", "root.json", "t"]);
    assert!(err.contains(".obao") && err.contains("outboard"), "{err}");

    // Against another trust root: the release key is not in its release role.
    for k in ["r2.key", "rel2.key"] {
        ok(d, &["keygen", "--out", k]);
    }
    ok(
        d,
        &[
            "root",
            "init",
            "--root-key",
            "r2.key",
            "--release-key",
            "rel2.key",
            "--membership-key",
            "rel2.key",
            "--expires",
            "30d",
            "--out",
            "other.json",
        ],
    );
    let err = fails(d, &["release", "verify", "--root", "other.json", "rel"]);
    assert!(
        err.contains("manifest.json") && err.contains("not a key of the release role"),
        "{err}"
    );

    // Expired: the same release checked a year later.
    let err = fails(
        d,
        &[
            "--now",
            "2099-01-01T00:00:00Z",
            "release",
            "verify",
            "--root",
            "root.json",
            "rel",
        ],
    );
    assert!(err.contains("expired"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for e in fs::read_dir(from).expect("ls") {
        let e = e.expect("entry");
        let t = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            fs::copy(e.path(), t).expect("copy");
        }
    }
}

#[test]
fn failed_builds_leave_nothing_behind() {
    let s = Setup::new();
    let d = s.path();
    let before = s.entries();

    let err = String::from_utf8_lossy(
        &run(
            d,
            &[
                "release",
                "build",
                "--target",
                "missing.img",
                "--product",
                "p",
                "--hardware",
                "h",
                "--version",
                "1",
                "--counter",
                "1",
                "--expires",
                "1d",
                "--key",
                "release.key",
                "--out",
                "rel",
            ],
        )
        .stderr,
    )
    .into_owned();
    assert!(err.contains("missing.img"), "{err}");
    assert_eq!(s.entries(), before, "a missing image leaves nothing");

    // A key that is not in the root's release role: refused before anything is published.
    ok(d, &["keygen", "--out", "stranger.key"]);
    let before = s.entries();
    let o = run(
        d,
        &[
            "release",
            "build",
            "--target",
            "image.img",
            "--product",
            "p",
            "--hardware",
            "h",
            "--version",
            "1",
            "--counter",
            "1",
            "--expires",
            "1d",
            "--key",
            "stranger.key",
            "--root",
            "root.json",
            "--out",
            "rel",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a key of the release role"));
    assert_eq!(s.entries(), before, "a refused signature leaves nothing");

    // An existing output is never overwritten.
    assert!(s.build("rel", &[]).status.success());
    let manifest = fs::read(d.join("rel/manifest.json")).expect("manifest");
    let o = s.build("rel", &["--zstd-level", "3"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    assert_eq!(
        fs::read(d.join("rel/manifest.json")).expect("manifest"),
        manifest
    );
    assert!(
        !s.entries().iter().any(|e| e.contains("partial")),
        "{:?}",
        s.entries()
    );
}

#[test]
fn full_disk_leaves_nothing_behind() {
    let s = Setup::new();
    let d = s.path();
    let small = d.join("small");
    fs::create_dir(&small).expect("mkdir");
    // A 1 MiB tmpfs cannot hold the 2 MiB artifact. Needs root (CI runs as root).
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&small)
        .status();
    if !matches!(mounted, Ok(st) if st.success()) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let o = s.build("small/rel", &[]);
    let listing: Vec<_> = fs::read_dir(&small)
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    let _ = Command::new("umount").arg(&small).status();
    assert!(!o.status.success(), "build onto a full disk must fail");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        listing.is_empty(),
        "nothing left on the full disk: {listing:?}"
    );
}

#[test]
fn delta_commands_leave_no_half_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_image(&d.join("old"), 1);
    // The target: the base with a few regions changed, so the delta has work to do.
    let mut new = fs::read(d.join("old")).expect("read");
    for i in (0..new.len()).step_by(40_000) {
        new[i] ^= 0x5a;
    }
    fs::write(d.join("new"), &new).expect("write");
    ok(
        d,
        &[
            "delta", "create", "--base", "old", "--target", "new", "--out", "d",
        ],
    );
    // An output path in use is refused before the work, and kept as it was.
    let err = fails(
        d,
        &[
            "delta", "create", "--base", "old", "--target", "new", "--out", "d",
        ],
    );
    assert!(err.contains("the output exists"), "{err}");
    ok(
        d,
        &[
            "delta", "apply", "--base", "old", "--delta", "d", "--out", "back",
        ],
    );
    assert_eq!(fs::read(d.join("back")).expect("read"), new);
    let err = fails(
        d,
        &[
            "delta", "apply", "--base", "old", "--delta", "d", "--out", "back",
        ],
    );
    assert!(err.contains("the output exists"), "{err}");
    // A delta cut short or damaged fails, and nothing appears at the output path, nor beside it.
    let bytes = fs::read(d.join("d")).expect("read");
    fs::write(d.join("cut"), &bytes[..bytes.len() * 2 / 3]).expect("write");
    let mut bad = bytes.clone();
    let at = bad.len() - 40;
    bad[at] ^= 0x55;
    fs::write(d.join("bad"), &bad).expect("write");
    for delta in ["cut", "bad"] {
        let out = format!("from-{delta}");
        let err = fails(
            d,
            &[
                "delta", "apply", "--base", "old", "--delta", delta, "--out", &out,
            ],
        );
        assert!(
            err.contains(&format!("{delta}: ")) && err.contains("malformed"),
            "{delta}: the error names the delta: {err}"
        );
        assert!(!d.join(&out).exists(), "{delta}: no output");
    }
    assert_eq!(
        names_in(d),
        ["back", "bad", "cut", "d", "new", "old"],
        "no temporary files left"
    );
}

/// `delta apply --expect` checks the output's BLAKE3 before it puts the output in place: the right
/// pair gives the image, a wrong base or a wrong expectation gives a clear error and nothing at the
/// output path.
#[test]
fn delta_apply_checks_the_expected_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_image(&d.join("old"), 1);
    write_image(&d.join("other"), 2);
    let mut new = fs::read(d.join("old")).expect("read");
    for i in (0..new.len()).step_by(30_000) {
        new[i] = new[i].wrapping_add(7);
    }
    fs::write(d.join("new"), &new).expect("write");
    ok(
        d,
        &[
            "delta", "create", "--base", "old", "--target", "new", "--out", "d",
        ],
    );
    let want = wardswarm_node::hash::Hash::of(&new).to_string();
    let out = ok(
        d,
        &[
            "delta", "apply", "--base", "old", "--delta", "d", "--out", "n1", "--expect", &want,
        ],
    );
    assert!(out.contains(&want) && out.contains("as expected"), "{out}");
    assert_eq!(fs::read(d.join("n1")).expect("read"), new);
    // Without `--expect`, the hash is printed for the caller to compare.
    let out = ok(
        d,
        &[
            "delta", "apply", "--base", "old", "--delta", "d", "--out", "n2",
        ],
    );
    assert!(out.contains(&want) && !out.contains("as expected"), "{out}");
    // The wrong base (a delta carries no hash of its base or target): refused by the hash, or
    // earlier as malformed; either way nothing at the output path.
    let err = fails(
        d,
        &[
            "delta", "apply", "--base", "other", "--delta", "d", "--out", "n3", "--expect", &want,
        ],
    );
    assert!(
        err.contains("not the expected") || err.contains("malformed"),
        "{err}"
    );
    assert!(!d.join("n3").exists());
    // The right pair but another expectation.
    let old_hash = wardswarm_node::hash::Hash::of(&fs::read(d.join("old")).expect("read"));
    let err = fails(
        d,
        &[
            "delta",
            "apply",
            "--base",
            "old",
            "--delta",
            "d",
            "--out",
            "n4",
            "--expect",
            &old_hash.to_string(),
        ],
    );
    assert!(
        err.contains("not the expected") && err.contains("nothing was written"),
        "{err}"
    );
    assert!(!d.join("n4").exists());
    // A malformed expectation is refused before any work.
    let err = fails(
        d,
        &[
            "delta", "apply", "--base", "old", "--delta", "d", "--out", "n5", "--expect", "abc",
        ],
    );
    assert!(err.contains("algorithm prefix"), "{err}");
    assert!(!d.join("n5").exists());
    assert_eq!(
        names_in(d),
        ["d", "n1", "n2", "new", "old", "other"],
        "no temporary files left"
    );
}

#[test]
fn root_rotation_needs_both_thresholds() {
    let s = Setup::new();
    let d = s.path();
    ok(d, &["keygen", "--out", "root2.key"]);
    // Rotation signed only by the new root key: written, but not acceptable yet.
    let out = ok(
        d,
        &[
            "root",
            "rotate",
            "--root",
            "root.json",
            "--root-key",
            "root2.key",
            "--expires",
            "400d",
            "--out",
            "root-v2.json",
        ],
    );
    assert!(out.contains("NOT met"), "{out}");
    let err = fails(
        d,
        &["root", "verify", "--trusted", "root.json", "root-v2.json"],
    );
    assert!(
        err.contains("root of version 1") && err.contains("threshold is 1"),
        "{err}"
    );
    // The old root key countersigns: now the chain verifies.
    ok(
        d,
        &[
            "root",
            "sign",
            "--root",
            "root-v2.json",
            "--previous",
            "root.json",
            "--key",
            "root.key",
        ],
    );
    let out = ok(
        d,
        &["root", "verify", "--trusted", "root.json", "root-v2.json"],
    );
    assert!(out.contains("version 2 follows the trusted chain"), "{out}");

    // Signed only by the old key: refused for want of the new threshold.
    let root3 = ok(d, &["keygen", "--out", "root3.key"]);
    ok(
        d,
        &[
            "root",
            "rotate",
            "--root",
            "root.json",
            "--root-key",
            root3.trim(),
            "--key",
            "root.key",
            "--expires",
            "400d",
            "--out",
            "alt-v2.json",
        ],
    );
    let err = fails(
        d,
        &["root", "verify", "--trusted", "root.json", "alt-v2.json"],
    );
    assert!(
        err.contains("root of version 2") && err.contains("0 valid"),
        "{err}"
    );

    // A root edited by hand is refused as non-canonical or badly signed.
    let text = fs::read_to_string(d.join("root-v2.json")).expect("root");
    fs::write(
        d.join("edited.json"),
        text.replace("\"threshold\":1", "\"threshold\": 1"),
    )
    .expect("write");
    let err = fails(
        d,
        &["root", "verify", "--trusted", "root.json", "edited.json"],
    );
    assert!(err.contains("canonical"), "{err}");
}

#[test]
fn release_threshold_two_of_two() {
    let s = Setup::new();
    let d = s.path();
    ok(d, &["keygen", "--out", "release2.key"]);
    ok(
        d,
        &[
            "root",
            "init",
            "--root-key",
            "root.key",
            "--release-key",
            "release.key",
            "--release-key",
            "release2.key",
            "--threshold",
            "release=2",
            "--membership-key",
            "membership.key",
            "--expires",
            "365d",
            "--out",
            "root2.json",
        ],
    );
    let base = [
        "release",
        "build",
        "--target",
        "image.img",
        "--product",
        "p",
        "--hardware",
        "h",
        "--version",
        "1",
        "--counter",
        "1",
        "--expires",
        "1d",
        "--root",
        "root2.json",
        "--key",
        "release.key",
    ];
    let mut one = base.to_vec();
    one.extend(["--out", "one"]);
    let err = fails(d, &one);
    assert!(
        err.contains("1 valid signature(s), threshold is 2"),
        "{err}"
    );
    let mut two = base.to_vec();
    two.extend(["--key", "release2.key", "--out", "two"]);
    ok(d, &two);
    ok(d, &["release", "verify", "--root", "root2.json", "two"]);
    let err = fails(d, &["release", "verify", "--root", "root.json", "two"]);
    assert!(err.contains("not a key of the release role"), "{err}");
}

/// A device config naming a test fault is refused, with the key named, before anything starts:
/// production builds have no faults, and a test build accepts them only with
/// `WARDSWARM_TEST_FAULTS=1` (which this process does not set).
#[test]
fn a_node_config_with_a_fault_key_is_refused_and_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("device.toml");
    fs::write(
        &cfg,
        "ward = \"icu-3\"\nkey = \"k\"\ncertificate = \"c\"\ntrust_root = \"r\"\nstore = \"s\"\n\
         [agent]\nstate = \"a\"\nhardware = \"h\"\nfault = \"pause-install\"\n\
         [agent.slots]\nbackend = \"file\"\ndir = \"slots\"\n",
    )
    .expect("config");
    let o = Command::new(env!("CARGO_BIN_EXE_wardswarm"))
        .current_dir(dir.path())
        .env_remove("WARDSWARM_TEST_FAULTS")
        .args(["node", "--config"])
        .arg(&cfg)
        .output()
        .expect("run");
    assert!(!o.status.success(), "a fault key was accepted");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("agent.fault"), "the key is not named: {err}");
    assert!(
        !dir.path().join("s").exists() && !dir.path().join("a").exists(),
        "state was created before the config was refused"
    );
}

/// Runs a command that must fail within `limit` (it is killed otherwise, and the test fails): a
/// refusal, not a hang.
fn fails_soon(dir: &Path, args: &[&str], limit: std::time::Duration) -> String {
    let mut child = bin()
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let end = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            assert!(!status.success(), "wardswarm {args:?} should have failed");
            return err;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            panic!("wardswarm {args:?} hung instead of refusing");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("mkfifo");
    assert!(st.success(), "mkfifo");
}

/// A FIFO given as the target image or as a release's manifest is refused at once, not read.
#[test]
fn a_fifo_as_target_or_manifest_is_refused_not_waited_on() {
    let s = Setup::new();
    let d = s.path();
    let o = s.build("rel", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    fs::remove_file(d.join("image.img")).expect("rm");
    mkfifo(&d.join("image.img"));
    let limit = std::time::Duration::from_secs(20);
    let args = build_args("4.2.2", "43", "rel2");
    let err = fails_soon(
        d,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        limit,
    );
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!d.join("rel2").exists(), "nothing left behind");
    fs::remove_file(d.join("rel/manifest.json")).expect("rm");
    mkfifo(&d.join("rel/manifest.json"));
    let err = fails_soon(
        d,
        &["release", "verify", "--root", "root.json", "rel"],
        limit,
    );
    assert!(err.contains("not a regular file"), "{err}");
}

/// A counter near u64::MAX would leave every device that commits it unable to update: refused
/// unless forced.
#[test]
fn a_counter_near_the_maximum_needs_force() {
    let s = Setup::new();
    let d = s.path();
    let args = |counter: &str, out: &str, force: bool| {
        let mut a = build_args("9.9.9", counter, out);
        if force {
            a.push("--force-counter".into());
        }
        a
    };
    let max = u64::MAX.to_string();
    let a = args(&max, "huge", false);
    let err = fails(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--force-counter"), "{err}");
    assert!(!d.join("huge").exists());
    let a = args(&max, "huge", true);
    ok(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Two releases with one counter cannot be told apart by any device's anti-rollback check: the
/// index is not published.
#[test]
fn origin_publish_refuses_two_releases_with_one_counter() {
    let s = Setup::new();
    let d = s.path();
    fs::create_dir_all(d.join("origin/releases")).expect("mkdir");
    assert!(s.build("origin/releases/a", &[]).status.success());
    assert!(s.build("origin/releases/b", &[]).status.success());
    let err = fails(
        d,
        &[
            "origin",
            "publish",
            "origin",
            "--key",
            "release.key",
            "--root",
            "root.json",
            "--expires",
            "7d",
        ],
    );
    assert!(
        err.contains("counter 42") && err.contains("its own"),
        "{err}"
    );
    assert!(!d.join("origin/index.json").exists(), "no index written");
}

/// `audit verify` of a file that is not there is an error, not "0 records, chain intact".
#[test]
fn audit_verify_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = fails(dir.path(), &["audit", "verify", "agent/audit.jsonl"]);
    assert!(err.contains("agent/audit.jsonl"), "{err}");
}

/// The README's `release build ... --out origin/releases/4.2.1` in a fresh folder makes the folders
/// it names (before: "origin/releases: No such file or directory").
#[test]
fn release_build_makes_the_folders_of_its_output() {
    let s = Setup::new();
    let o = s.build("origin/releases/4.2.1", &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(s
        .path()
        .join("origin/releases/4.2.1/manifest.json")
        .is_file());
}

/// A duration without a unit says how to write one (before: "time unit needed"), and `--help`
/// shows the format.
#[test]
fn a_duration_without_a_unit_says_how_to_write_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = fails(
        dir.path(),
        &[
            "root",
            "init",
            "--root-key",
            "a",
            "--release-key",
            "b",
            "--membership-key",
            "c",
            "--expires",
            "365",
            "--out",
            "root.json",
        ],
    );
    assert!(err.contains("365d for days"), "{err}");
    let help = ok(dir.path(), &["root", "init", "--help"]);
    assert!(help.contains("365d"), "{help}");
}

/// Key files are PKCS#8 that OpenSSL reads (`openssl pkey`), and it finds the same public key.
#[test]
fn key_files_are_readable_by_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = ok(dir.path(), &["keygen", "--out", "k.pem"]);
    let out = match Command::new("openssl")
        .args(["pkey", "-in", "k.pem", "-pubout", "-outform", "DER"])
        .current_dir(dir.path())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            assert!(std::env::var_os("CI").is_none(), "CI installs openssl: {e}");
            eprintln!("SKIPPED: no openssl here ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An ed25519 SubjectPublicKeyInfo ends with the 32 key bytes.
    let der = out.stdout;
    assert!(der.len() >= 32);
    let key = hex::encode(&der[der.len() - 32..]);
    assert_eq!(id.trim(), format!("ed25519:{key}"));
}

/// `cert revoke`: each call writes the next serial over the list, from a certificate or a peer id;
/// mistakes are refused with nothing written.
#[test]
fn cert_revoke_writes_the_next_list_and_refuses_mistakes() {
    let s = Setup::new();
    let d = s.dir.path();
    ok(d, &["keygen", "--out", "dev.key"]);
    let peer = ok(d, &["peer-id", "--key", "dev.key"]).trim().to_string();
    let cert = |ward: &str, out: &str| {
        ok(
            d,
            &[
                "cert",
                "issue",
                "--root",
                "root.json",
                "--key",
                "membership.key",
                "--ward",
                ward,
                "--device",
                "pump-1",
                "--peer",
                &peer,
                "--expires",
                "30d",
                "--out",
                out,
            ],
        );
    };
    cert("icu-3", "pump-1.cert");
    cert("icu-4", "other-ward.cert");
    fn revoke<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        [base, extra].concat()
    }
    let base = [
        "cert",
        "revoke",
        "--root",
        "root.json",
        "--key",
        "membership.key",
        "--ward",
        "icu-3",
        "--list",
        "gw/revocations.json",
    ];
    let r = revoke(&base, &["--certificate", "pump-1.cert"]);
    let out = ok(d, &r);
    assert!(
        out.contains("serial 1") && out.contains(&peer) && out.contains("pump-1"),
        "{out}"
    );
    let list = wardswarm_node::revocation::RevocationList::parse(
        &fs::read(d.join("gw/revocations.json")).expect("list"),
    )
    .expect("a valid list");
    assert_eq!((list.serial, list.revoked.len()), (1, 1));
    let before = fs::read(d.join("gw/revocations.json")).expect("list");

    let r = revoke(&base, &["--certificate", "other-ward.cert"]);
    let err = fails(d, &r);
    assert!(err.contains("icu-4"), "{err}");
    let r = revoke(&base, &["--reinstate", "12D3KooWNotOnTheList"]);
    let err = fails(d, &r);
    assert!(err.contains("not on the list"), "{err}");
    let r = revoke(&base, &[]);
    let err = fails(d, &r);
    assert!(err.contains("nothing to do"), "{err}");
    assert_eq!(
        fs::read(d.join("gw/revocations.json")).expect("list"),
        before,
        "a refused call writes nothing"
    );
    // An edited list is refused rather than silently extended.
    let edited = String::from_utf8(before.clone())
        .expect("utf8")
        .replace("\"serial\":1", "\"serial\":7");
    fs::write(d.join("gw/revocations.json"), edited).expect("edit");
    let r = revoke(&base, &["--peer", &peer]);
    let err = fails(d, &r);
    assert!(
        err.contains("current list") && err.contains("signature"),
        "{err}"
    );
    fs::write(d.join("gw/revocations.json"), &before).expect("restore");
    let r = revoke(&base, &["--reinstate", &peer]);
    let out = ok(d, &r);
    assert!(
        out.contains("serial 2") && out.contains("0 peer(s) revoked"),
        "{out}"
    );
}
