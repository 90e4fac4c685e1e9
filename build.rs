//! Records the commit being built, for `--version` and `sparkrtc_gateway_build_info`. Outside a
//! git checkout (a source tarball, a container build without `.git`) it is "unknown".

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SPARKRTC_GATEWAY_COMMIT={commit}");
    // A new commit moves HEAD's branch; a checkout moves HEAD itself.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
