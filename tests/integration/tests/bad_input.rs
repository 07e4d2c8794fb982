//! Bad input: each case exits 1 with one meaningful line on stderr and leaves nothing behind.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::fs;

/// Write `config` raw, run `create`, expect a clean failure and no leftovers; returns the output.
fn create_fails(c: &Container) -> Output {
    let out = c.create_cmd(&[]).run().fails_cleanly();
    assert!(!c.root.join(&c.id).exists(), "failed create left its state dir");
    c.rt(["state", &c.id]).code_is(1);
    c.assert_clean();
    out
}

#[test]
fn config_not_json() {
    let c = Container::shared("bad-notjson");
    fs::write(c.bundle.join("config.json"), "this is { not json").unwrap();
    create_fails(&c);
}

#[test]
fn config_wrong_type_names_the_field() {
    let mut c = Container::shared("bad-uid-type");
    c.set("/process/user/uid", json!("0"));
    c.write_config();
    let out = create_fails(&c);
    // runc: `json: cannot unmarshal string into Go struct field User.process.user.uid of type
    // uint32` — it names the path too.
    assert!(out.stderr.contains("process.user.uid"), "the message must name the field:\n{out}");
}

#[test]
fn config_missing_required_field() {
    let mut c = Container::shared("bad-no-process");
    // `create` of a config without "process" cannot start anything.
    remove_ptr(&mut c.config, "/process");
    c.write_config();
    let out = create_fails(&c);
    // runc: "process property must not be empty"
    assert!(out.stderr.contains("process"), "{out}");
}

#[test]
fn unsupported_oci_version() {
    let mut c = Container::shared("bad-ociversion");
    c.set("/ociVersion", json!("2.0.0"));
    c.write_config();
    // runc 1.1 does not check ociVersion at all and happily creates the container. The spec's
    // versioning says a runtime must not run a config of a major version it doesn't know, so
    // capsa refuses it; against runc only cleanliness is checked.
    if !is_capsa() {
        let out = c.create_cmd(&[]).run();
        if out.success() {
            c.delete_force().ok();
        }
        c.assert_clean();
        return;
    }
    let out = create_fails(&c);
    assert!(out.stderr.contains("ociVersion") && out.stderr.contains("2.0.0"), "{out}");
}

#[test]
fn missing_rootfs() {
    let mut c = Container::shared("bad-rootfs");
    let missing = c.dir.join("no-such-rootfs");
    c.set("/root/path", json!(missing.to_str()));
    c.write_config();
    let out = create_fails(&c);
    // runc: "invalid rootfs: stat /path: no such file or directory"
    assert!(out.stderr.contains("no-such-rootfs"), "the message must name the path:\n{out}");
}

#[test]
fn relative_cwd() {
    let mut c = Container::shared("bad-cwd");
    c.set("/process/cwd", json!("tmp"));
    c.write_config();
    let out = create_fails(&c);
    // runc: "Cwd must be an absolute path"; capsa names the field: `process.cwd "tmp": must be
    // absolute`.
    if is_capsa() {
        assert!(out.stderr.contains("process.cwd"), "{out}");
    } else {
        assert!(out.stderr.to_lowercase().contains("cwd"), "{out}");
    }
}

#[test]
fn missing_config() {
    let c = Container::shared("bad-noconfig");
    let _ = fs::remove_file(c.bundle.join("config.json"));
    let out = create_fails(&c);
    // runc: "JSON specification file config.json not found"
    assert!(out.stderr.contains("config.json"), "{out}");
}

#[test]
fn missing_bundle_dir() {
    let c = Container::shared("bad-nobundle");
    let out = c.cmd(["create", "--bundle", c.dir.join("nope").to_str().unwrap(), &c.id]).run().fails_cleanly();
    assert!(out.stderr.contains("nope"), "{out}");
    c.assert_clean();
}

#[test]
fn unknown_id() {
    let c = Container::shared("bad-unknown");
    let ghost = format!("{}-ghost", c.id);
    for args in [
        vec!["state", ghost.as_str()],
        vec!["start", ghost.as_str()],
        vec!["kill", ghost.as_str()],
        vec!["kill", ghost.as_str(), "KILL"],
        vec!["delete", ghost.as_str()],
    ] {
        let out = c.rt(args).fails_cleanly();
        // runc says "container does not exist" (without the id).
        assert!(out.stderr.contains("does not exist") || out.stderr.contains(&ghost), "{out}");
    }
    // `delete --force` of an unknown id succeeds silently (runc; containerd relies on it when
    // cleaning up after a failed create).
    let out = c.rt(["delete", "--force", ghost.as_str()]).ok();
    assert_eq!(out.stderr, "", "{out}");
    c.assert_clean();
}

#[test]
fn duplicate_id() {
    let mut c = Container::shared("bad-dup");
    c.args(&["sleep", "100"]);
    c.create(&[]).ok();
    let pid = c.pid();
    let out = c.create_cmd(&[]).run().fails_cleanly();
    // runc: "container with given ID already exists"
    assert!(out.stderr.contains("exists"), "{out}");
    // The first container is untouched.
    assert_eq!(c.status(), "created");
    assert_eq!(c.pid(), pid);
    assert!(pid_alive(pid));
}

#[test]
fn invalid_signal() {
    let mut c = Container::shared("bad-signal");
    c.args(&["sleep", "100"]);
    c.create_start();
    for sig in ["FOO", "SIGFOO", "999", "0x9"] {
        let out = c.rt(["kill", &c.id, sig]).fails_cleanly();
        if sig == "FOO" {
            // runc: `unknown signal "FOO"`
            assert!(out.stderr.contains("FOO"), "{out}");
        }
    }
    assert_eq!(c.status(), "running", "a bad kill must not affect the container");
}

#[test]
fn invalid_id() {
    let c = Container::shared("bad-id");
    c.write_config();
    for id in ["../escape", "a/b", ".."] {
        let out = c.cmd(["create", "--bundle", c.bundle.to_str().unwrap(), id]).run().fails_cleanly();
        assert!(!c.dir.join("escape").exists(), "{out}");
    }
    c.assert_clean();
}

/// A failure late in create (the user process cannot be found) also cleans up: no state, cgroup,
/// process or mount.
#[test]
fn missing_executable() {
    let mut c = Container::shared("bad-exe");
    c.args(&["/no/such/binary"]);
    c.write_config();
    let out = c.create_cmd(&[]).run();
    if out.success() {
        // A runtime may defer the lookup to start (exec); then start must fail and state be sane.
        c.start().fails_cleanly();
    } else {
        let out = out.fails_cleanly();
        // runc: `exec: "/no/such/binary": stat /no/such/binary: no such file or directory`
        assert!(out.stderr.contains("/no/such/binary"), "{out}");
        c.assert_clean();
    }
}

/// A mount with an unknown filesystem type fails inside init; everything is rolled back.
#[test]
fn bad_mount() {
    let mut c = Container::shared("bad-mount");
    c.add_mount(json!({"destination": "/mnt", "type": "nosuchfs", "source": "none"}));
    c.write_config();
    c.create_cmd(&[]).run().fails_cleanly();
    c.assert_clean();
}
