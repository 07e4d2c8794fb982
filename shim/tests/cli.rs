//! The shim binary's own command line (the containerd-driven behaviour is tested end to end in
//! tests/integration/tests/shim.rs, which also needs this binary built: this file makes
//! `cargo test --workspace` build it).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_containerd-shim-capsa-v2");

#[test]
fn version() {
    let out = Command::new(BIN).arg("-v").output().expect("run shim");
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("containerd-shim-capsa-v2") && s.contains(env!("CARGO_PKG_VERSION")), "{s}");
}

#[test]
fn missing_namespace_is_one_error_line() {
    let out = Command::new(BIN).args(["-id", "x", "start"]).output().expect("run shim");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing on stdout (containerd reads it as the address)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("-namespace"), "{err}");
}

#[test]
fn delete_without_container_still_answers() {
    // containerd runs `delete` after a shim died; with nothing to clean it must still print a
    // DeleteResponse (exit status 137) and exit 0, and stderr stays empty.
    let dir = std::env::temp_dir().join(format!("capsa-shim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let out = Command::new(BIN)
        .args(["-namespace", "ns", "-address", "/nonexistent/c.sock", "-id", "nope", "-bundle"])
        .arg(&dir)
        .arg("delete")
        .env("PATH", "/nonexistent")
        .output()
        .expect("run shim");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // field 2 (exit_status) varint 137 = 0x10 0x89 0x01
    assert!(out.stdout.windows(3).any(|w| w == [0x10, 0x89, 0x01]), "{:?}", out.stdout);
}

#[test]
fn serve_without_listener_fails_cleanly() {
    // Not started through `start` (no fd 3, no -socket): one error line, exit 1, no hang.
    // fd 3 explicitly something else than a listening socket (the harness may have one open).
    let out = Command::new("sh")
        .args(["-c", "exec 3</dev/null; exec \"$0\" \"$@\"", BIN])
        .args(["-namespace", "ns", "-id", "x", "-address", "/nonexistent/c.sock"])
        .env("TTRPC_ADDRESS", "/nonexistent/c.sock.ttrpc")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run shim");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("fd 3"), "{err}");
}
