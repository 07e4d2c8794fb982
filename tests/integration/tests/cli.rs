//! The CLI surface outside the container lifecycle: spec, features, --version, --log, global
//! flags, argument errors.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::collections::BTreeSet;
use std::fs;

/// `runc spec` of runc 1.1.5 (terminal true, args ["sh"]).
const RUNC_SPEC: &str = r#"{"ociVersion":"1.0.2-dev","process":{"terminal":true,"user":{"uid":0,"gid":0},"args":["sh"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","TERM=xterm"],"cwd":"/","capabilities":{"bounding":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"effective":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"permitted":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"ambient":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true},"root":{"path":"rootfs","readonly":true},"hostname":"runc","mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},{"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},{"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},{"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},{"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","relatime","ro"]}],"linux":{"resources":{"devices":[{"allow":false,"access":"rwm"}]},"namespaces":[{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}],"maskedPaths":["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],"readonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]}}"#;

/// `runc spec --rootless` of runc 1.1.5 run as root (so hostID 0).
const RUNC_SPEC_ROOTLESS: &str = r#"{"ociVersion":"1.0.2-dev","process":{"terminal":true,"user":{"uid":0,"gid":0},"args":["sh"],"env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","TERM=xterm"],"cwd":"/","capabilities":{"bounding":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"effective":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"permitted":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"],"ambient":["CAP_AUDIT_WRITE","CAP_KILL","CAP_NET_BIND_SERVICE"]},"rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":1024}],"noNewPrivileges":true},"root":{"path":"rootfs","readonly":true},"hostname":"runc","mounts":[{"destination":"/proc","type":"proc","source":"proc"},{"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},{"destination":"/dev/pts","type":"devpts","source":"devpts","options":["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620"]},{"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","noexec","nodev","mode=1777","size=65536k"]},{"destination":"/dev/mqueue","type":"mqueue","source":"mqueue","options":["nosuid","noexec","nodev"]},{"destination":"/sys","type":"none","source":"/sys","options":["rbind","nosuid","noexec","nodev","ro"]},{"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","relatime","ro"]}],"linux":{"uidMappings":[{"containerID":0,"hostID":0,"size":1}],"gidMappings":[{"containerID":0,"hostID":0,"size":1}],"namespaces":[{"type":"pid"},{"type":"ipc"},{"type":"uts"},{"type":"mount"},{"type":"user"}],"maskedPaths":["/proc/acpi","/proc/asound","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/sys/firmware","/proc/scsi"],"readonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]}}"#;

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// Compare a generated spec with runc's: identical except what legitimately varies between
/// versions (ociVersion 1.x, hostname, and lists runc ≥1.2 extended: masked/readonly paths and
/// namespaces may be supersets of 1.1's).
fn assert_spec_like(actual: &Value, expected: &str) {
    let expected: Value = serde_json::from_str(expected).unwrap();
    let mut a = actual.clone();
    assert!(a["ociVersion"].as_str().is_some_and(|v| v.starts_with("1.")), "ociVersion {}", a["ociVersion"]);
    a["ociVersion"] = expected["ociVersion"].clone();
    assert!(a["hostname"].is_string(), "hostname");
    a["hostname"] = expected["hostname"].clone();
    for key in ["maskedPaths", "readonlyPaths"] {
        let got = strings(&a["linux"][key]);
        let want = strings(&expected["linux"][key]);
        assert!(got.is_superset(&want), "linux.{key}: missing {:?}", want.difference(&got));
        a["linux"][key] = expected["linux"][key].clone();
    }
    let types = |v: &Value| -> BTreeSet<String> { v.as_array().unwrap().iter().map(|n| n["type"].as_str().unwrap().to_string()).collect() };
    let got = types(&a["linux"]["namespaces"]);
    let want = types(&expected["linux"]["namespaces"]);
    assert!(got.is_superset(&want), "namespaces: missing {:?}", want.difference(&got));
    a["linux"]["namespaces"] = expected["linux"]["namespaces"].clone();
    if a != expected {
        panic!(
            "spec differs from runc's:\n got: {}\nwant: {}",
            serde_json::to_string_pretty(actual).unwrap(),
            serde_json::to_string_pretty(&expected).unwrap()
        );
    }
}

#[test]
fn spec_default() {
    let c = Container::shared("spec");
    let dir = c.host_dir("spec");
    runtime_cmd(&dir, &c.out).arg("spec").run().ok();
    let text = fs::read_to_string(dir.join("config.json")).expect("spec writes ./config.json");
    let v: Value = serde_json::from_str(&text).expect("config.json is JSON");
    assert_spec_like(&v, RUNC_SPEC);
    // A second `spec` refuses to overwrite (runc: "File config.json exists. Remove it first").
    let out = runtime_cmd(&dir, &c.out).arg("spec").run().fails_cleanly();
    assert!(out.stderr.contains("config.json"), "{out}");
    assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), text, "spec overwrote config.json");
}

#[test]
fn spec_rootless() {
    let c = Container::shared("spec-rootless");
    let dir = c.host_dir("spec");
    runtime_cmd(&dir, &c.out).args(["spec", "--rootless"]).run().ok();
    let v: Value = serde_json::from_str(&read(dir.join("config.json"))).expect("JSON");
    assert_spec_like(&v, RUNC_SPEC_ROOTLESS);
}

#[test]
fn spec_bundle_flag() {
    let c = Container::shared("spec-bundle");
    let dir = c.host_dir("spec-b");
    runtime_cmd(&c.dir, &c.out).args(["spec", "--bundle"]).arg(&dir).run().ok();
    assert!(dir.join("config.json").is_file());
    assert!(!c.dir.join("config.json").exists(), "spec --bundle wrote into the cwd");
    let dir2 = c.host_dir("spec-b2");
    runtime_cmd(&c.dir, &c.out).arg("spec").arg("-b").arg(&dir2).run().ok();
    assert!(dir2.join("config.json").is_file());
    // A missing bundle dir is an error (runc: "chdir DIR: no such file or directory").
    runtime_cmd(&c.dir, &c.out).args(["spec", "--bundle"]).arg(c.dir.join("missing")).run().fails_cleanly();
}

/// The spec written by `spec` runs as is on our rootfs (terminal switched off).
#[test]
fn spec_output_runs() {
    let mut c = Container::new("spec-runs");
    let _ = fs::remove_file(c.bundle.join("config.json"));
    runtime_cmd(&c.bundle, &c.out).arg("spec").run().ok();
    let mut v: Value = serde_json::from_str(&read(c.bundle.join("config.json"))).unwrap();
    v["process"]["terminal"] = json!(false);
    v["process"]["args"] = json!(["sh", "-c", "echo spec-ok"]);
    c.config = v;
    assert_eq!(c.run(&[]).ok().stdout, "spec-ok\n");
}

#[test]
fn features_json() {
    let c = Container::shared("features");
    let out = runtime_cmd(&c.dir, &c.out).arg("features").run().ok();
    let v = out.json();
    let keys: BTreeSet<&str> = v.as_object().expect("object").keys().map(String::as_str).collect();
    for k in ["ociVersionMin", "ociVersionMax", "hooks", "mountOptions", "linux", "annotations"] {
        assert!(keys.contains(k), "features lacks {k}: {out}");
    }
    assert!(v["ociVersionMin"].as_str().is_some_and(|s| s.starts_with("1.0")));
    assert!(v["ociVersionMax"].as_str().is_some_and(|s| s.starts_with("1.")));
    let hooks = strings(&v["hooks"]);
    for h in ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"] {
        assert!(hooks.contains(h), "hooks lacks {h}");
    }
    let opts = strings(&v["mountOptions"]);
    for o in [
        "bind",
        "rbind",
        "ro",
        "rw",
        "nosuid",
        "nodev",
        "noexec",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "relatime",
        "strictatime",
        "remount",
    ] {
        assert!(opts.contains(o), "mountOptions lacks {o}");
    }
    let linux = &v["linux"];
    for k in ["namespaces", "capabilities", "cgroup", "seccomp", "apparmor", "selinux"] {
        assert!(linux.get(k).is_some(), "linux lacks {k}: {out}");
    }
    let ns = strings(&linux["namespaces"]);
    for n in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.contains(n), "linux.namespaces lacks {n}");
    }
    // capsa implements the time namespace (runc 1.1 does not list it).
    if is_capsa() {
        assert!(ns.contains("time"), "linux.namespaces lacks time");
    }
    let caps = strings(&linux["capabilities"]);
    for cap in CAPS {
        assert!(caps.contains(*cap), "linux.capabilities lacks {cap}");
    }
    for k in ["v1", "v2", "systemd", "systemdUser"] {
        assert!(linux["cgroup"][k].is_boolean(), "linux.cgroup.{k}");
    }
    assert!(linux["seccomp"]["enabled"].is_boolean());
    assert!(v["annotations"].is_object());
}

/// `--version` and `-v` in runc's layout: `NAME version V`, then `key: value` lines with
/// `commit:` and `spec:` (docker and podman parse them; docker takes the last line with the
/// word "version" as the runtime's, so only the first has it). capsa says how it was built:
/// the binary under test is the one hack/build.sh (and hack/install.sh) makes, static and
/// non-PIE, and `features` says the same.
#[test]
fn version_flag() {
    let c = Container::shared("version");
    let out = runtime_cmd(&c.dir, &c.out).arg("--version").run().ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let name = if is_capsa() { "capsa" } else { "runc" };
    assert!(lines[0].starts_with(&format!("{name} version ")), "{out}");
    assert!(lines[1..].iter().all(|l| l.contains(": ") && !l.contains("version")), "key: value lines: {out}");
    assert!(lines.iter().any(|l| l.starts_with("commit: ")), "{out}");
    // runc prints "spec: <OCI runtime-spec version>" among the lines; tools grep for it.
    assert!(lines.iter().any(|l| l.starts_with("spec: 1.")), "{out}");
    assert_eq!(out.stderr, "");
    let short = runtime_cmd(&c.dir, &c.out).arg("-v").run().ok();
    assert_eq!(short.stdout, out.stdout);
    if is_capsa() {
        let commit = lines.iter().find_map(|l| l.strip_prefix("commit: ")).unwrap();
        assert!(commit.len() >= 12 && commit != "unknown", "{out}");
        assert!(lines.contains(&"build: static, non-PIE, release"), "the fast build (hack/build.sh): {out}");
        let f = runtime_cmd(&c.dir, &c.out).arg("features").run().ok().json();
        assert_eq!(f["annotations"]["org.opencontainers.capsa.build"], "static, non-PIE, release", "{f}");
        assert_eq!(f["annotations"]["org.opencontainers.capsa.commit"], commit, "{f}");
    }
}

/// `-h`, `--help`, `help`, `help CMD`, `CMD -h`: runc's layout (urfave/cli), exit 0.
#[test]
fn help_in_runcs_layout() {
    let c = Container::shared("help");
    let name = if is_capsa() { "capsa" } else { "runc" };
    for args in [vec!["-h"], vec!["--help"], vec!["help"], vec!["--root", "/x", "-h"]] {
        let out = runtime_cmd(&c.dir, &c.out).args(args).run().ok();
        let t = &out.stdout;
        assert!(t.starts_with(&format!("NAME:\n   {name} - ")), "{out}");
        for section in ["\nUSAGE:\n   ", "\nVERSION:\n   ", "\nCOMMANDS:\n", "\nGLOBAL OPTIONS:\n"] {
            assert!(t.contains(section), "{section:?}: {out}");
        }
        assert!(t.contains("\nspec: 1."), "the version lines: {out}");
        for cmd in ["create", "delete", "exec", "kill", "list", "run", "spec", "start", "state", "update", "features"] {
            assert!(t.contains(&format!("\n   {cmd}")), "COMMANDS lists {cmd}: {out}");
        }
        assert!(t.contains("\n   --root value"), "{out}");
        assert!(t.contains("\n   --version, -v"), "{out}");
    }
    for args in [vec!["exec", "-h"], vec!["exec", "--help"], vec!["help", "exec"]] {
        let out = runtime_cmd(&c.dir, &c.out).args(args).run().ok();
        let t = &out.stdout;
        assert!(t.starts_with(&format!("NAME:\n   {name} exec - ")), "{out}");
        assert!(t.contains(&format!("\nUSAGE:\n   {name} exec [command options] <container-id> <command>")), "{out}");
        assert!(t.contains("\nOPTIONS:\n"), "{out}");
        for flag in ["--cwd value", "--env value, -e value", "--tty, -t", "--process value, -p value", "--cgroup value"] {
            assert!(t.contains(&format!("\n   {flag}")), "{flag}: {out}");
        }
        assert!(!t.contains("--root"), "global options are not exec's: {out}");
    }
}

/// `--debug` logs the lifecycle steps (text and JSON); without it there is no debug line. With
/// `--log FILE` the file is created at start, as runc does, even when nothing else is logged.
#[test]
fn debug_logs_lifecycle_steps() {
    let mut c = Container::shared("debug");
    c.args(&["true"]);
    c.write_config();
    let b = c.bundle.to_str().unwrap();
    let out = c.cmd(["--debug", "run", "--bundle", b, &c.id]).run().ok();
    assert!(out.stderr.lines().any(|l| l.contains("level=debug")), "text debug lines on stderr: {out}");
    let quiet = c.run(&[]).ok();
    assert!(!quiet.stderr.contains("level=debug"), "{quiet}");

    let log = c.dir.join("debug.json");
    let l = log.to_str().unwrap();
    c.cmd(["--log", l, "--log-format", "json", "--debug", "create", "--bundle", b, &c.id]).run().ok();
    c.cmd(["--log", l, "--log-format", "json", "--debug", "start", &c.id]).run().ok();
    c.wait_status("stopped");
    c.cmd(["--log", l, "--log-format", "json", "--debug", "delete", &c.id]).run().ok();
    let text = read(&log);
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    assert!(lines.iter().all(|v| v["level"].is_string() && v["msg"].is_string() && v["time"].is_string()), "{text}");
    let debug: Vec<&str> = lines.iter().filter(|v| v["level"] == "debug").map(|v| v["msg"].as_str().unwrap()).collect();
    assert!(!debug.is_empty(), "{text}");
    if is_capsa() {
        for step in ["create", "init forked", "created", "start", "deleted"] {
            assert!(debug.iter().any(|m| m.contains(step)), "a debug line for {step:?}: {text}");
        }
    }

    let created = c.dir.join("new-log.json");
    c.cmd(["--log", created.to_str().unwrap(), "--debug", "list"]).run().ok();
    assert!(created.exists(), "--log FILE is created");
    let quiet_log = c.dir.join("quiet-log.json");
    c.cmd(["--log", quiet_log.to_str().unwrap(), "list"]).run().ok();
    assert!(quiet_log.exists(), "--log FILE is created without --debug too");
    c.assert_clean();
}

/// `spec` adds a cgroup namespace only on a pure cgroup v2 host, as runc does.
#[test]
fn spec_cgroup_namespace_only_on_cgroup_v2() {
    let c = Container::shared("spec-cgroupns");
    let dir = c.host_dir("spec");
    runtime_cmd(&dir, &c.out).arg("spec").run().ok();
    let v: Value = serde_json::from_str(&read(dir.join("config.json"))).unwrap();
    let has = v["linux"]["namespaces"].as_array().unwrap().iter().any(|n| n["type"] == "cgroup");
    let v2 = fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    assert_eq!(has, v2, "cgroup namespace in spec on a {} host: {v}", if v2 { "cgroup v2" } else { "v1/hybrid" });
}

/// checkpoint and restore check their flags as runc does before saying that checkpointing is
/// not available (CRIU does not work on this host): a caller learns about its own mistake
/// first. Nothing is created.
#[test]
fn checkpoint_and_restore_check_flags_first() {
    let mut c = Container::shared("checkpoint");
    c.args(&["sleep", "100"]);
    c.create_start();
    let images = c.host_dir("images");
    let img = images.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--image-path", img, "--parent-path", "/abs"], "--parent-path must be relative"),
        (vec!["--image-path", img, "--parent-path", "missing"], "invalid --parent-path"),
        (vec!["--image-path", img, "--page-server", "nohostport"], "--page-server"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["checkpoint"];
        args.extend(flags);
        args.push(&c.id);
        let out = c.rt(args).fails_cleanly();
        assert!(out.err_msg().contains(want), "want {want:?}: {out}");
    }
    let ghost = format!("{}-ghost", c.id);
    let out = c.rt(["checkpoint", "--image-path", img, &ghost]).fails_cleanly();
    assert!(out.err_msg().contains("does not exist"), "{out}");
    if is_capsa() {
        for (flags, want) in [(vec!["--manage-cgroups-mode", "bogus"], "--manage-cgroups-mode"), (vec!["--empty-ns", "pid"], "--empty-ns")]
        {
            let mut args = vec!["checkpoint", "--image-path", img];
            args.extend(flags);
            args.push(&c.id);
            let out = c.rt(args).fails_cleanly();
            assert!(out.err_msg().contains(want), "want {want:?}: {out}");
        }
        let out = c.rt(["checkpoint", "--image-path", img, &c.id]).fails_cleanly();
        assert!(out.err_msg().contains("CRIU"), "valid flags: then not supported: {out}");
        let out = c.rt(["restore", "--image-path", img, "--bundle", "/nonexistent-bundle", &ghost]).fails_cleanly();
        assert!(out.err_msg().contains("nonexistent-bundle"), "{out}");
        let out = c.rt(["restore", "--image-path", img, "--manage-cgroups-mode", "x", &ghost]).fails_cleanly();
        assert!(out.err_msg().contains("--manage-cgroups-mode"), "{out}");
        let b = c.bundle.to_str().unwrap();
        let out = c.rt(["restore", "--image-path", img, "--bundle", b, &ghost]).fails_cleanly();
        assert!(out.err_msg().contains("CRIU"), "{out}");
    }
    assert_eq!(fs::read_dir(&images).unwrap().count(), 0, "nothing created in the image dir");
    assert_eq!(c.status(), "running");
}

/// `--log FILE --log-format json`: every line is a JSON object; a failing create leaves an
/// error line containerd can show ({"level":"error","msg":"...","time":"..."}).
#[test]
fn log_json_on_failing_create() {
    let mut c = Container::shared("log-json");
    c.set("/process/cwd", json!("relative/cwd"));
    c.write_config();
    let log = c.dir.join("log.json");
    let b = c.bundle.to_str().unwrap();
    let out = c.cmd(["--log", log.to_str().unwrap(), "--log-format", "json", "create", "--bundle", b, &c.id]).run().fails_cleanly();
    let text = read(&log);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "log file is empty; stderr: {out}");
    for l in &lines {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("log line not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["msg"].is_string() && v["time"].is_string(), "{l}");
    }
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["level"], "error", "{text}");
    let msg = last["msg"].as_str().unwrap();
    assert!(!msg.is_empty());
    assert!(msg.contains("cwd") || msg.contains("Cwd"), "{msg}");
    let time = last["time"].as_str().unwrap();
    assert!(time.len() >= 20 && time.as_bytes()[10] == b'T', "time {time}");
    // With --log, runc prints just the message on stderr (no logrus "time=... level=..." prefix).
    assert!(out.stderr.contains(msg), "{out}");
    c.assert_clean();
}

/// The log file is appended to, never truncated (containerd reuses one log.json per bundle).
#[test]
fn log_appends() {
    let c = Container::shared("log-append");
    let log = c.dir.join("log.json");
    fs::write(&log, "{\"level\":\"info\",\"msg\":\"earlier\",\"time\":\"2020-01-01T00:00:00Z\"}\n").unwrap();
    c.cmd(["--log", log.to_str().unwrap(), "--log-format", "json", "state", "no-such-container"]).run().fails_cleanly();
    let text = read(&log);
    assert!(text.starts_with("{\"level\":\"info\",\"msg\":\"earlier\""), "{text}");
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
}

/// Global flags containerd, podman and people pass are accepted.
#[test]
fn global_flags_accepted() {
    let c = Container::shared("global-flags");
    for flags in
        [vec!["--debug"], vec!["--log-format", "text"], vec!["--systemd-cgroup"], vec!["--rootless", "false"], vec!["--rootless", "auto"]]
    {
        let mut args: Vec<&str> = flags.clone();
        args.push("list");
        c.rt(args).ok();
    }
    // `--root` is honoured: a container created under one root is invisible under another.
    let other = c.dir.join("other-root");
    let mut d = Container::shared("global-flags-root");
    d.args(&["sleep", "100"]);
    d.create(&[]).ok();
    let out = runtime_cmd(&d.dir, &d.out).arg("--root").arg(&other).args(["state", &d.id]).run();
    out.fails_cleanly();
}

/// Missing arguments are usage errors with exit code 1 like runc's (clap's default would be 2).
#[test]
fn missing_arguments_exit_1() {
    let c = Container::shared("missing-args");
    for cmd in ["create", "start", "state", "delete"] {
        let out = c.rt([cmd]);
        assert_eq!(out.code, Some(1), "{out}");
        assert!(!out.stderr.trim().is_empty(), "{out}");
    }
    let out = c.rt(["kill"]);
    assert_eq!(out.code, Some(1), "{out}");
}
