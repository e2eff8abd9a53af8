//! Finds the optional test tools once, at build time, so a test that needs a missing one is
//! reported as *ignored, with the reason* instead of passing silently. A build that is told the tool
//! is required (`WARDSWARM_REQUIRE_NGINX`, `WARDSWARM_REQUIRE_JS_DIALER`, set by `.ci/run`) fails when
//! it is missing.

const NGINX: [&str; 3] = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

/// The js-libp2p dialer (`tests/interop/js-dialer`): Node.js on the PATH and `npm ci` run there.
fn js_dialer() {
    println!("cargo::rustc-check-cfg=cfg(wardswarm_no_js_dialer)");
    println!("cargo::rerun-if-env-changed=WARDSWARM_REQUIRE_JS_DIALER");
    println!("cargo::rerun-if-env-changed=PATH");
    let modules = "tests/interop/js-dialer/node_modules/libp2p/package.json";
    println!("cargo::rerun-if-changed={modules}");
    let node = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(node && std::path::Path::new(modules).exists()) {
        if std::env::var_os("WARDSWARM_REQUIRE_JS_DIALER").is_some() {
            panic!("WARDSWARM_REQUIRE_JS_DIALER is set but node or the dialer's packages are missing (npm ci --prefix tests/interop/js-dialer)");
        }
        println!("cargo::rustc-cfg=wardswarm_no_js_dialer");
    }
}

fn main() {
    js_dialer();
    println!("cargo::rustc-check-cfg=cfg(wardswarm_no_nginx)");
    println!("cargo::rerun-if-env-changed=WARDSWARM_REQUIRE_NGINX");
    for p in NGINX {
        println!("cargo::rerun-if-changed={p}");
    }
    let found = NGINX.iter().any(|p| std::path::Path::new(p).exists());
    if !found {
        if std::env::var_os("WARDSWARM_REQUIRE_NGINX").is_some() {
            panic!("WARDSWARM_REQUIRE_NGINX is set but nginx is not installed (apt-get install nginx-light)");
        }
        println!("cargo::rustc-cfg=wardswarm_no_nginx");
    }
}
