//! Finds the optional test tools once, at build time, so a test that needs a missing one is
//! reported as *ignored, with the reason* instead of passing silently. A build that is told the tool
//! is required (`WARDSWARM_REQUIRE_NGINX`, set by `.ci/run`) fails when it is missing.

const NGINX: [&str; 3] = ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"];

fn main() {
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
