//! The container process: args, env, cwd, user and groups, umask, capabilities,
//! noNewPrivileges, rlimits, oom_score_adj, terminal and stdio.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use capsa_integration::*;
use std::time::Duration;

#[test]
fn args_env_cwd() {
    let mut c = Container::shared("args-env-cwd");
    c.args(&["sh", "-c", "printf '%s|' \"$0\" \"$@\"; echo; pwd; tr '\\0' '\\n' < /proc/$$/environ | sort", "zero", "a b", "", "c"]);
    c.set("/process/env", json!(["PATH=/bin", "FOO=bar baz", "EMPTY=", "TERM=xterm"]));
    c.set("/process/cwd", json!("/home/alice"));
    let out = c.run(&[]).ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "zero|a b||c|", "{out}");
    assert_eq!(l[1], "/home/alice", "{out}");
    // The environment is exactly the configured one, plus HOME from /etc/passwd when the config
    // has none (runc does this; images rely on it).
    assert_eq!(&l[2..], ["EMPTY=", "FOO=bar baz", "HOME=/root", "PATH=/bin", "TERM=xterm"], "{out}");
}

#[test]
fn home_from_config_is_kept() {
    let mut c = Container::shared("env-home");
    c.set("/process/env", json!(["PATH=/bin", "HOME=/elsewhere"]));
    c.sh("echo $HOME");
    assert_eq!(c.run(&[]).ok().stdout, "/elsewhere\n");
}

/// A missing cwd is created (runc does MkdirAll; Docker's WORKDIR relies on it).
#[test]
fn missing_cwd_is_created() {
    let mut c = Container::new("cwd-mkdir");
    c.set("/process/cwd", json!("/new/work/dir"));
    c.args(&["pwd"]);
    assert_eq!(c.run(&[]).ok().stdout, "/new/work/dir\n");
    assert!(c.rootfs.join("new/work/dir").is_dir());
}

#[test]
fn user_uid_gid_additional_gids() {
    let mut c = Container::shared("user");
    c.set("/process/user", json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 65534]}));
    c.sh("id; grep -E '^(Uid|Gid|Groups):' /proc/$$/status");
    let out = c.run(&[]).ok();
    let l: Vec<String> = out.stdout.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(l[0], "uid=1000(alice) gid=1000(alice) groups=10(wheel),65534(nogroup)", "{out}");
    assert_eq!(l[1], "Uid: 1000 1000 1000 1000", "{out}");
    assert_eq!(l[2], "Gid: 1000 1000 1000 1000", "{out}");
    assert_eq!(l[3], "Groups: 10 65534", "{out}");
}

/// A user with no additionalGids gets no supplementary groups, even though /etc/group lists alice
/// in wheel (runc only adds /etc/group memberships when the user is given by name, which the OCI
/// config cannot do).
#[test]
fn user_without_additional_gids() {
    let mut c = Container::shared("user-nogroups");
    c.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    c.sh("grep -E '^Groups:' /proc/$$/status");
    let out = c.run(&[]).ok();
    assert_eq!(out.stdout.split_whitespace().collect::<Vec<_>>(), ["Groups:"], "{out}");
}

#[test]
fn umask() {
    let mut c = Container::shared("umask");
    c.tmpfs("/tmp");
    c.set("/process/user/umask", json!(0o077));
    c.sh("umask; touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d");
    assert_eq!(c.run(&[]).ok().stdout, "0077\n600\n700\n");

    // Default: 0022.
    let mut d = Container::shared("umask-default");
    d.tmpfs("/tmp");
    d.sh("umask; touch /tmp/f; stat -c %a /tmp/f");
    assert_eq!(d.run(&[]).ok().stdout, "0022\n644\n");
}

fn caps_status(c: &mut Container) -> std::collections::BTreeMap<String, String> {
    c.sh("grep -E '^(Cap|NoNewPrivs)' /proc/$$/status");
    let out = c.run(&[]).ok();
    out.stdout.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect()
}

/// The five capability sets as the kernel shows them after exec. The config is consistent
/// (ambient ⊆ inheritable ⊆ bounding = permitted = effective), so the values are determined by
/// exec's rules: root keeps bounding in permitted/effective; a non-root user keeps only ambient.
#[test]
fn capabilities() {
    let bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_SETUID"];
    let inheritable = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let ambient = ["CAP_NET_BIND_SERVICE"];
    let caps = json!({
        "bounding": bounding, "effective": bounding, "permitted": bounding,
        "inheritable": inheritable, "ambient": ambient,
    });

    let mut root = Container::shared("caps-root");
    root.set("/process/capabilities", caps.clone());
    let s = caps_status(&mut root);
    assert_eq!(s["CapBnd"], cap_mask(&bounding), "{s:?}");
    assert_eq!(s["CapPrm"], cap_mask(&bounding), "{s:?}");
    assert_eq!(s["CapEff"], cap_mask(&bounding), "{s:?}");
    assert_eq!(s["CapInh"], cap_mask(&inheritable), "{s:?}");
    assert_eq!(s["CapAmb"], cap_mask(&ambient), "{s:?}");

    let mut user = Container::shared("caps-user");
    user.set("/process/capabilities", caps);
    user.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    let s = caps_status(&mut user);
    assert_eq!(s["CapBnd"], cap_mask(&bounding), "{s:?}");
    assert_eq!(s["CapPrm"], cap_mask(&ambient), "{s:?}");
    assert_eq!(s["CapEff"], cap_mask(&ambient), "{s:?}");
    assert_eq!(s["CapInh"], cap_mask(&inheritable), "{s:?}");
    assert_eq!(s["CapAmb"], cap_mask(&ambient), "{s:?}");

    // No capabilities object: all sets empty.
    let mut none = Container::shared("caps-none");
    remove_ptr(&mut none.config, "/process/capabilities");
    let s = caps_status(&mut none);
    for k in ["CapBnd", "CapPrm", "CapEff", "CapInh", "CapAmb"] {
        assert_eq!(s[k], cap_mask(&[]), "{k}: {s:?}");
    }
}

/// A capability dropped from the bounding set is really unavailable (chown fails).
#[test]
fn capability_enforced() {
    let mut c = Container::shared("caps-enforced");
    c.tmpfs("/tmp");
    c.sh("touch /tmp/f; chown 1000 /tmp/f 2>&1 && echo chowned; true");
    let out = c.run(&[]).ok();
    assert!(out.stdout.contains("Operation not permitted"), "{out}");

    let mut d = Container::shared("caps-enforced-chown");
    d.tmpfs("/tmp");
    let all = ["CAP_CHOWN", "CAP_KILL"];
    d.set("/process/capabilities", json!({"bounding": all, "effective": all, "permitted": all}));
    d.sh("touch /tmp/f; chown 1000 /tmp/f 2>&1 && echo chowned");
    assert_eq!(d.run(&[]).ok().stdout, "chowned\n");
}

#[test]
fn no_new_privileges() {
    let mut c = Container::shared("nnp-on");
    c.set("/process/noNewPrivileges", json!(true));
    assert_eq!(caps_status(&mut c)["NoNewPrivs"], "1");

    let mut d = Container::shared("nnp-off");
    d.set("/process/noNewPrivileges", json!(false));
    assert_eq!(caps_status(&mut d)["NoNewPrivs"], "0");
}

#[test]
fn rlimits() {
    let mut c = Container::shared("rlimits");
    c.set(
        "/process/rlimits",
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}
        ]),
    );
    c.sh("ulimit -n; ulimit -Hn; grep -E '^Max (open files|core file size|processes)' /proc/$$/limits");
    let out = c.run(&[]).ok();
    let l: Vec<String> = out.stdout.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(l[0], "512", "{out}");
    assert_eq!(l[1], "1000", "{out}");
    assert!(l.contains(&"Max core file size 0 4096 bytes".to_string()), "{out}");
    assert!(l.contains(&"Max processes 300 400 processes".to_string()), "{out}");
    assert!(l.contains(&"Max open files 512 1000 files".to_string()), "{out}");
}

/// oom_score_adj can only be raised here: root lacks CAP_SYS_RESOURCE on this host.
#[test]
fn oom_score_adj() {
    let mut c = Container::shared("oom-score-adj");
    c.set("/process/oomScoreAdj", json!(500));
    c.sh("cat /proc/$$/oom_score_adj");
    assert_eq!(c.run(&[]).ok().stdout, "500\n");
}

/// terminal: true with --console-socket: the runtime sends the pty master over the socket; the
/// container's stdio is the slave (/dev/pts/0 in its own devpts), with the configured size.
#[test]
fn terminal_console_socket() {
    let mut c = Container::shared("terminal");
    c.set("/process/terminal", json!(true));
    c.set("/process/consoleSize", json!({"height": 25, "width": 91}));
    c.sh("tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; stty size; \
          ls -l /dev/console | cut -c1; echo done");
    let sock = ConsoleSocket::bind(&c.dir.join("console.sock"));
    let sock_path = sock.path.to_str().unwrap().to_string();
    let create = c.create(&["--console-socket", &sock_path]).ok();
    let master = sock.recv_master(Duration::from_secs(10));
    let pty = PtyReader::spawn(master);
    c.start().ok();
    let text = pty.wait_for("done");
    let l: Vec<&str> = text.lines().collect();
    assert_eq!(l[0], "/dev/pts/0", "{text}");
    assert_eq!(l[1], "all-tty", "{text}");
    assert_eq!(l[2], "25 91", "consoleSize: {text}");
    assert_eq!(l[3], "c", "/dev/console is the pty (a char device): {text}");
    // Nothing went to create's own stdout/stderr.
    assert_eq!(create.stdout_now(), "");
}

/// terminal: false: the container's stdio are the runtime's stdin/stdout/stderr.
#[test]
fn terminal_false_inherits_stdio() {
    let mut c = Container::shared("stdio");
    let input = c.dir.join("stdin.txt");
    std::fs::write(&input, "line-from-stdin\n").unwrap();
    c.sh("cat; echo to-stderr >&2; [ -t 0 ] || echo not-a-tty");
    c.write_config();
    let out = c.run_cmd(&[]).stdin(Stdin::File(input.clone())).run().ok();
    assert_eq!(out.stdout, "line-from-stdin\nnot-a-tty\n");
    assert_eq!(out.stderr, "to-stderr\n");
}

/// `run` in the foreground with terminal: true and no --console-socket: capsa holds the pty
/// and copies it to its own stdout; `run -d` without a console socket is refused.
#[test]
fn terminal_held_by_run_in_foreground() {
    if !is_capsa() {
        return; // runc opens /dev/tty here and needs the caller to have a terminal; capsa does not.
    }
    let mut c = Container::shared("terminal-fg");
    c.set("/process/terminal", json!(true));
    c.sh("tty; exit 4");
    let out = c.run(&[]);
    assert_eq!(out.code, Some(4), "{out}");
    assert!(out.stdout.trim().starts_with("/dev/pts/"), "{out}");
    {
        let mut d = Container::shared("terminal-detach");
        d.set("/process/terminal", json!(true));
        d.args(&["true"]);
        d.write_config();
        let out = d.run_cmd(&["--detach"]).run().fails_cleanly();
        assert!(out.stderr.contains("console-socket"), "{out}");
        d.assert_clean();
    }
}
