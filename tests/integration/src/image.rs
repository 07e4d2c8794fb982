//! A busybox OCI image built offline (umoci, from the host's /bin/busybox), for the suites that
//! drive containerd (`shim.rs` through ctr, `cri.rs` through the CRI API).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::run_host_cmd;

/// busybox applets linked in the image's /bin.
const APPLETS: &[&str] = &["sh", "true", "sleep", "cat", "echo", "dd", "tty", "stty", "tr", "ls", "id", "head", "yes", "ps", "kill"];

/// A pod sandbox's init for the `pause` tag: exits on TERM, and reaps whatever is re-parented to
/// it (`wait` collects any child) when the pod shares one pid namespace.
pub const PAUSE_SCRIPT: &str = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done";

/// Builds `dir/image.tar`, an OCI layout with two tags of one busybox layer: `latest`
/// (cmd `/bin/sh`) and `pause` (cmd `sh -c PAUSE_SCRIPT`). Import it with
/// `ctr images import --base-name docker.io/library/NAME`. About 0.1 s.
#[track_caller]
pub fn busybox_image_tar(dir: &Path) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).expect("mkdir image rootfs");
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).expect("copy /bin/busybox (busybox-static)");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).expect("symlink applet");
    }
    let layout = dir.join("image-oci");
    let tar = dir.join("image.tar");
    let sh = format!(
        "set -e; umoci init --layout {l}; umoci new --image {l}:latest; \
         umoci insert --rootless --image {l}:latest {r} /; \
         umoci config --image {l}:latest --config.cmd /bin/sh --config.env PATH=/bin; \
         umoci config --image {l}:latest --tag pause --config.cmd sh --config.cmd -c --config.cmd \"$PAUSE\"; \
         tar -C {l} -cf {t} .",
        l = layout.display(),
        r = rootfs.display(),
        t = tar.display()
    );
    let mut c = Command::new("sh");
    c.args(["-c", &sh]).env("PAUSE", PAUSE_SCRIPT);
    let out = run_host_cmd(c, Duration::from_secs(60));
    assert!(out.success(), "building the busybox image with umoci failed:\n{out}");
    fs::remove_dir_all(&rootfs).expect("remove image rootfs");
    fs::remove_dir_all(&layout).expect("remove image layout");
    tar
}
