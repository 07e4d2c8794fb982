//! hack/install.sh, as the README tells a new user to run it, into a temporary PREFIX (never
//! into /usr/local on this shared machine): it installs the build the benchmarks measure
//! (static, non-PIE, what `--version` says), the containerd shim and capsactl next to it, and
//! a podman drop-in that makes `podman --runtime capsa` find it.
//!
//! The build steps of install.sh are cargo no-ops here when hack/test.sh has built the release
//! binaries first (it does); run alone, the test builds them (minutes).

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Long enough for a cold release build of both binaries on two busy cores.
const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);

#[test]
fn install_into_a_prefix() {
    assert!(is_capsa(), "installs capsa: run with the capsa binary under test");
    let p = Podman::new();
    let prefix = p.dir.join("prefix");
    let mut cmd = Command::new("sh");
    cmd.arg(workspace_root().join("hack/install.sh")).arg(&prefix);
    let out = run_host_cmd(cmd, BUILD_TIMEOUT);
    assert!(out.success(), "hack/install.sh failed:\n{out}");

    // The binaries, executable, where containerd (shim on PATH) and people (capsa) look.
    for bin in ["capsa", "containerd-shim-capsa-v2", "capsactl", "capsactl-monitor"] {
        let m = fs::metadata(prefix.join("bin").join(bin)).unwrap_or_else(|e| panic!("{bin}: {e}\n{out}"));
        assert_eq!(m.permissions().mode() & 0o777, 0o755, "{bin}");
    }
    let capsa = prefix.join("bin/capsa");
    let version = Cmd::new(&capsa, &p.out).arg("--version").run().ok();
    assert!(version.stdout.lines().any(|l| l == "build: static, non-PIE, release"), "{version}");
    assert_eq!(fs::read(&capsa).unwrap(), fs::read(workspace_root().join("target/release/capsa")).unwrap(), "the build the suite tests");
    let shim = Cmd::new(prefix.join("bin/containerd-shim-capsa-v2"), &p.out).arg("-v").run().ok();
    assert!(shim.stdout.contains("io.containerd.capsa.v2"), "{shim}");
    // The shim of its own profile (release-shim: a panicking request fails alone).
    let built = workspace_root().join("target/release-shim/containerd-shim-capsa-v2");
    assert_eq!(fs::read(prefix.join("bin/containerd-shim-capsa-v2")).unwrap(), fs::read(built).unwrap(), "the release-shim build");
    Cmd::new(prefix.join("bin/capsactl"), &p.out).arg("--help").run().ok();

    // podman finds it by name through the drop-in, read from the real drop-in directory: a
    // private mount namespace puts a copy of /etc/containers with the drop-in (and this
    // suite's ulimits) over the host's, which stays untouched.
    let dropin = prefix.join("etc/containers/containers.conf.d/50-capsa.conf");
    let text = read(&dropin);
    assert!(text.contains(&format!("capsa = [\"{}\"]", capsa.display())), "{text}");
    let etc = p.dir.join("etc-containers");
    copy_dir(Path::new("/etc/containers"), &etc);
    fs::create_dir_all(etc.join("containers.conf.d")).unwrap();
    fs::copy(&dropin, etc.join("containers.conf.d/50-capsa.conf")).unwrap();
    fs::write(etc.join("containers.conf.d/40-test.conf"), PODMAN_CONF).unwrap();
    let podman = |args: &str| format!("podman {} --runtime capsa {args}", p.storage_flags().join(" "));
    let script = format!(
        "set -e; mount --bind {etc} /etc/containers; {}; {}",
        podman("info --format '{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Path}}'"),
        podman(&format!("run --rm --network none --rootfs {} sh -c 'echo via-name; id -u'", p.rootfs.display())),
        etc = etc.display()
    );
    let out = Cmd::new("unshare", &p.out)
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .timeout(Duration::from_secs(60))
        .run()
        .ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l.first().copied(), Some(format!("capsa {}", capsa.display()).as_str()), "{out}");
    assert_eq!(&l[1..], ["via-name", "0"], "{out}");
    assert!(Path::new("/etc/containers/containers.conf.d/50-capsa.conf").metadata().is_err(), "the host's /etc is untouched");
}

/// `cp -a` of a small directory tree (no special files).
fn copy_dir(src: &Path, dst: &Path) {
    let mut c = Command::new("cp");
    c.arg("-a").arg(src).arg(dst);
    run_host_cmd(c, CMD_TIMEOUT).ok();
}
