//! `capsactl build` end to end, as root and offline: base images made here from
//! busybox-static (and, for the compile case, the host's gcc), real RUN containers on
//! overlay snapshots, the cache, .dockerignore, hostile contexts and rootfs, failures
//! that leave nothing behind.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

mod registry_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::*;

/// A build context directory with these files.
fn context(env: &Env, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let d = env.dir.join(name);
    for (p, body) in files {
        let f = d.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, body).unwrap();
    }
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The cgroup parent of a test's RUN containers (its own, so that parallel tests and
/// other users of /capsa do not see each other's).
fn cgroup_parent(env: &Env) -> String {
    format!("/capsa-test-{}", env.dir.file_name().unwrap().to_string_lossy())
}

fn build(env: &Env, ctx: &Path, args: &[&str]) -> Output {
    let cg = cgroup_parent(env);
    let mut a = vec!["build", "--cgroup-parent", &cg];
    a.extend_from_slice(args);
    a.push(ctx.to_str().unwrap());
    env.ctl(&a)
}

/// `build` as a command to spawn (a test that kills it, or runs several at once).
fn build_command(env: &Env, ctx: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_capsactl"));
    c.arg("--root").arg(env.root()).arg("--state-root").arg(env.state());
    c.args(["build", "--cgroup-parent", &cgroup_parent(env)]).args(args).arg(ctx);
    c.stdin(std::process::Stdio::null());
    c
}

/// A build that must fail with `want` in its error.
fn build_fails(env: &Env, ctx: &Path, args: &[&str], want: &str) {
    let o = build(env, ctx, args);
    assert!(!o.status.success() && err(&o).contains(want), "want {want:?}:\n{}", err(&o));
}

fn build_ok(env: &Env, ctx: &Path, args: &[&str]) -> (String, String) {
    let o = build(env, ctx, args);
    assert!(o.status.success(), "build failed:\n{}\n{}", err(&o), out(&o));
    (out(&o).trim().to_string(), err(&o))
}

fn image_config(env: &Env, name: &str) -> Value {
    let v: Value = serde_json::from_str(&env.ok(&["image", "inspect", name])).unwrap();
    v[0].clone()
}

/// Nothing of a build is left: no process, mount, capsa state, scratch dir, cgroup.
fn assert_clean(env: &Env) {
    // A `run --rm` of a built image returns once its monitor's exit helper has answered; the
    // helper and the monitor end a moment later (the other suites wait for them too). A
    // build's own processes must be gone at once.
    let monitor_side = |c: &str| c.contains("__exited") || c.contains("capsactl-monitor") || c.contains("__watch");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.procs().iter().any(|(_, c)| monitor_side(c)) && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(env.procs().is_empty(), "processes left: {:?}", env.procs());
    assert!(env.mounts().is_empty(), "mounts left: {:?}", env.mounts());
    let state: Vec<_> = std::fs::read_dir(env.state()).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(state.is_empty(), "capsa state left: {state:?}");
    let tmp: Vec<_> = std::fs::read_dir(env.root().join("tmp")).map(|r| r.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert!(tmp.is_empty(), "scratch left in the store's tmp: {tmp:?}");
    assert_eq!(env.count("containers"), 0, "container dirs left");
    let cg = cgroup_parent(env);
    for h in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = h.path().join(cg.trim_start_matches('/'));
        if let Ok(rd) = std::fs::read_dir(&p) {
            let left: Vec<_> = rd.flatten().filter(|e| e.path().is_dir()).map(|e| e.file_name()).collect();
            assert!(left.is_empty(), "cgroups left under {}: {left:?}", p.display());
            let _ = std::fs::remove_dir(&p);
        }
    }
}

#[test]
fn single_stage_build_runs() {
    let env = Env::new("build-single");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            ("Dockerfile", "FROM busybox\nRUN echo built > /built.txt && mkdir -p /app\nCOPY hello.sh /app/\nWORKDIR /app\nCMD [\"sh\", \"hello.sh\"]\n"),
            ("hello.sh", "echo hello from $(cat /built.txt) in $(pwd)\n"),
        ],
    );
    let (id, log) = build_ok(&env, &ctx, &["-t", "app:1"]);
    assert!(id.starts_with("sha256:"), "{id}\n{log}");
    assert_eq!(env.ok(&["run", "--rm", "app:1"]), "hello from built in /app\n");
    let cfg = image_config(&env, "app:1");
    assert_eq!(cfg["Config"]["WorkingDir"], "/app");
    assert_eq!(cfg["RootFS"]["Layers"].as_array().unwrap().len(), 3, "{cfg}");
    // WORKDIR makes a missing directory (a layer), not an existing one.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nWORKDIR /srv/www\nWORKDIR /tmp\nCMD [\"pwd\"]\n").unwrap();
    build_ok(&env, &ctx, &["-t", "wd"]);
    assert_eq!(env.ok(&["run", "--rm", "wd", "ls", "-d", "/srv/www"]), "/srv/www\n");
    assert_eq!(image_config(&env, "wd")["RootFS"]["Layers"].as_array().unwrap().len(), 2);
    assert_clean(&env);
}

const HELLO_C: &str =
    "#include <stdio.h>\nint main(int argc, char **argv) { printf(\"hello, %s\\n\", argc > 1 ? argv[1] : \"world\"); return 0; }\n";

/// Every file the host's gcc needs to compile and statically link `hello.c` (found by
/// asking gcc: headers with -M, objects and archives with the linker's trace, programs
/// and the LTO plugin by name, shared libraries with ldd), as one layer tar (symlinks
/// dereferenced).
fn toolchain_layer(env: &Env) -> Vec<u8> {
    let src = env.write("probe.c", HELLO_C.as_bytes());
    let run = |args: &[&str]| -> String {
        let o = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e} (hack/deps.sh installs gcc)"));
        assert!(o.status.success(), "{args:?}: {}", err(&o));
        out(&o) + &err(&o)
    };
    let s = src.to_str().unwrap();
    let mut files: Vec<String> = Vec::new();
    for w in run(&["gcc", "-O2", "-M", s]).split_whitespace() {
        if w.starts_with('/') && !w.ends_with(".c") {
            files.push(w.to_string());
        }
    }
    let exe = env.dir.join("probe").to_string_lossy().into_owned();
    for l in run(&["gcc", "-static", "-O2", "-o", &exe, s, "-Wl,-t"]).lines() {
        let l = l.trim();
        let p = l.split('(').next().unwrap_or(l);
        if p.starts_with('/') && Path::new(p).exists() {
            files.push(std::fs::canonicalize(p).unwrap().to_string_lossy().into_owned());
            files.push(p.to_string());
        }
    }
    for prog in ["cc1", "collect2", "as", "ld", "lto-wrapper"] {
        let p = run(&["gcc", &format!("-print-prog-name={prog}")]).trim().to_string();
        let p = if p.starts_with('/') { p } else { run(&["sh", "-c", &format!("command -v {p}")]).trim().to_string() };
        files.push(p);
    }
    files.push(run(&["gcc", "-print-file-name=liblto_plugin.so"]).trim().to_string());
    files.push("/usr/bin/gcc".into());
    let mut libs = Vec::new();
    for f in &files {
        if let Ok(o) = Command::new("ldd").arg(f).output() {
            for l in out(&o).lines() {
                for w in l.split_whitespace() {
                    if w.starts_with('/') {
                        libs.push(w.to_string());
                    }
                }
            }
        }
    }
    files.extend(libs);
    files.sort();
    files.dedup();
    let rel: Vec<String> = files.iter().filter(|f| Path::new(f).exists()).map(|f| f.trim_start_matches('/').to_string()).collect();
    let tarp = env.dir.join("toolchain.tar");
    let o = Command::new("tar").arg("-chf").arg(&tarp).arg("-C").arg("/").args(&rel).output().unwrap();
    assert!(o.status.success(), "tar: {}", err(&o));
    std::fs::read(&tarp).unwrap()
}

/// An image of busybox plus the host's gcc, tagged `toolchain:latest`.
fn load_toolchain(env: &Env) {
    let bb = Layer::new().busybox().tar();
    let tc = toolchain_layer(env);
    let cfg = config(&[bb.clone(), tc.clone()], json!({"Cmd": ["sh"], "Env": ["PATH=/usr/bin:/bin"]}));
    let p = env.write("toolchain-image.tar", &docker_archive(&[bb, tc], &cfg, &["toolchain:latest"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
}

#[test]
fn multi_stage_compiles_with_gcc_copies_from_the_stage_and_skips_what_the_target_does_not_need() {
    let env = Env::new("build-multi");
    load_busybox(&env);
    load_toolchain(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            (
                "Dockerfile",
                "# syntax=docker/dockerfile:1\n\
                 FROM toolchain AS build\n\
                 WORKDIR /src\n\
                 COPY hello.c .\n\
                 RUN gcc -static -O2 -o /hello hello.c\n\
                 \n\
                 FROM busybox AS unused\n\
                 RUN echo this stage must not run; exit 1\n\
                 \n\
                 FROM busybox\n\
                 COPY --from=build /hello /usr/local/bin/hello\n\
                 CMD [\"hello\", \"capsa\"]\n",
            ),
            ("hello.c", HELLO_C),
        ],
    );
    let (id, log) = build_ok(&env, &ctx, &["-t", "hello:1"]);
    assert!(!log.contains("unused"), "the unused stage was built:\n{log}");
    assert_eq!(env.ok(&["run", "--rm", "hello:1"]), "hello, capsa\n");
    assert_eq!(env.ok(&["run", "--rm", "hello:1", "hello", "again"]), "hello, again\n");
    // The final image is busybox plus one layer: nothing of the toolchain.
    let cfg = image_config(&env, &id);
    assert_eq!(cfg["RootFS"]["Layers"].as_array().unwrap().len(), 2, "{cfg}");
    // --target builds that stage (and what it needs) only.
    let (_, log) = build_ok(&env, &ctx, &["--target", "build", "-t", "tc-build"]);
    assert!(log.contains("CACHED"), "{log}");
    assert!(env.ok(&["run", "--rm", "tc-build", "ls", "/hello"]).contains("/hello"));
    build_fails(&env, &ctx, &["--target", "nope"], "target stage \"nope\" could not be found");
    assert_clean(&env);
}

#[test]
fn args_env_and_substitution() {
    let env = Env::new("build-args");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            (
                "Dockerfile",
                "ARG BASE=busybox\n\
                 ARG VERSION=1.0\n\
                 FROM ${BASE}:latest\n\
                 ARG VERSION\n\
                 ARG WHO=world\n\
                 ARG UNSET\n\
                 ENV APP_HOME=/opt/app GREETING=\"hello ${WHO}\"\n\
                 ENV WHO=env-wins\n\
                 WORKDIR $APP_HOME\n\
                 WORKDIR sub\n\
                 LABEL version=$VERSION \"who\"=\"${WHO}\" def=${UNSET:-dflt} alt=${VERSION:+set}\n\
                 COPY ${FILE:-data.txt} ./\n\
                 EXPOSE 8080 53/udp\n\
                 USER 1000:1000\n\
                 STOPSIGNAL SIGINT\n\
                 RUN echo \"$GREETING|$VERSION|$WHO|$(pwd)|$(id -u)|${UNSET-none}\" > /tmp/out\n\
                 ENTRYPOINT [\"cat\"]\n\
                 CMD [\"/tmp/out\"]\n",
            ),
            ("data.txt", "data\n"),
        ],
    );
    let (_, log) = build_ok(&env, &ctx, &["-t", "args", "--build-arg", "VERSION=2.5", "--build-arg", "NOTUSED=1"]);
    assert!(log.contains("NOTUSED") && log.contains("were not consumed"), "{log}");
    assert_eq!(env.ok(&["run", "--rm", "args"]), "hello world|2.5|env-wins|/opt/app/sub|1000|none\n");
    assert_eq!(env.ok(&["run", "--rm", "args", "/opt/app/sub/data.txt"]), "data\n");
    let c = &image_config(&env, "args")["Config"];
    assert_eq!(c["WorkingDir"], "/opt/app/sub");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["StopSignal"], "SIGINT");
    assert_eq!(c["Labels"], json!({"version": "2.5", "who": "env-wins", "def": "dflt", "alt": "set"}));
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "53/udp": {}}));
    let envs: Vec<String> = serde_json::from_value(c["Env"].clone()).unwrap();
    assert!(envs.contains(&"APP_HOME=/opt/app".to_string()) && envs.contains(&"GREETING=hello world".to_string()), "{envs:?}");
    assert!(!envs.iter().any(|e| e.starts_with("VERSION=")), "ARGs are not in the image: {envs:?}");
    // A different build arg value is a different image (and the RUN runs again).
    let (_, log) = build_ok(&env, &ctx, &["-t", "args2", "--build-arg", "VERSION=3"]);
    assert!(log.contains("DONE"), "{log}");
    assert!(env.ok(&["run", "--rm", "args2"]).contains("|3|"));
    // Bad syntax and unknown instructions name the line.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN true\nFROB x\n").unwrap();
    let o = build(&env, &ctx, &[]);
    assert!(!o.status.success());
    assert!(err(&o).contains("Dockerfile:3: unknown instruction: FROB"), "{}", err(&o));
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nENV X=${Y\n").unwrap();
    assert!(err(&build(&env, &ctx, &[])).contains("Dockerfile:2: ENV: missing '}'"));
    assert_clean(&env);
}

#[test]
fn dockerignore_and_copy_forms() {
    let env = Env::new("build-ignore");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            (".dockerignore", "# comments\n*.log\n!keep.log\nsecret/\n**/*.tmp\nDockerfile\n"),
            ("Dockerfile", "FROM busybox\nCOPY . /ctx/\nCOPY src/*.c /globbed/\nCOPY --chmod=0700 --chown=1000:10 src/a.c /owned\nRUN cd /ctx && find . | sort > /list && stat -c '%a %u %g' /owned > /owner\n"),
            ("app.log", "no"),
            ("keep.log", "yes"),
            ("secret/key", "no"),
            ("src/a.c", "a"),
            ("src/b.c", "b"),
            ("src/x.h", "h"),
            ("src/deep/t.tmp", "no"),
        ],
    );
    build_ok(&env, &ctx, &["-t", "ign"]);
    let list = env.ok(&["run", "--rm", "ign", "cat", "/list"]);
    assert_eq!(list, ".\n./.dockerignore\n./keep.log\n./src\n./src/a.c\n./src/b.c\n./src/deep\n./src/x.h\n", "{list}");
    assert_eq!(env.ok(&["run", "--rm", "ign", "ls", "/globbed"]), "a.c\nb.c\n");
    assert_eq!(env.ok(&["run", "--rm", "ign", "cat", "/owner"]), "700 1000 10\n");
    // Symbolic --chmod, as chmod(1) and BuildKit: on each entry's own mode.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --chmod=u+x,go-w src/ /sym/\nCOPY --chmod=a=rX src /symd\n").unwrap();
    build_ok(&env, &ctx, &["-t", "sym"]);
    let modes = env.ok(&["run", "--rm", "sym", "sh", "-c", "stat -c '%a %n' /sym/a.c /sym/deep /symd/a.c /symd/deep"]);
    assert_eq!(modes, "744 /sym/a.c\n755 /sym/deep\n444 /symd/a.c\n555 /symd/deep\n");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --chmod=u+q src/ /sym/\n").unwrap();
    build_fails(&env, &ctx, &[], "Dockerfile:2: COPY: --chmod=u+q: \"q\": want permissions of rwxXst");
    // An excluded source is not there to copy.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY secret/key /k\n").unwrap();
    build_fails(&env, &ctx, &[], "not found");
    // Several sources need a directory destination.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY src/a.c src/b.c /file\n").unwrap();
    assert!(err(&build(&env, &ctx, &[])).contains("must be a directory"));
    // ADD: a local tar is unpacked; a URL is refused.
    let t = Layer::new().dir("pkg/", 0o755).file("pkg/data", 0o644, b"from the archive").tar();
    std::fs::write(ctx.join("pkg.tar.gz"), gzip(&t)).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nADD pkg.tar.gz /opt/\nADD src/a.c /opt/a.c\n").unwrap();
    build_ok(&env, &ctx, &["-t", "add"]);
    assert_eq!(env.ok(&["run", "--rm", "add", "cat", "/opt/pkg/data", "/opt/a.c"]), "from the archivea");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nADD https://example.com/x.tar /x\n").unwrap();
    assert!(err(&build(&env, &ctx, &[])).contains("remote URLs are not supported in this offline build"));
    assert_clean(&env);
}

/// Symlinked sources, special files and .dockerignore exceptions, as docker 20.10's
/// BuildKit does them (compared side by side: `docker build` then `docker save`).
#[test]
fn copy_names_symlinks_by_source_skips_special_files_and_follows_dockerignore_exceptions() {
    use std::os::unix::fs::symlink;
    let env = Env::new("build-copy-docker");
    load_busybox(&env);
    let secret = env.write("host-secret", b"HOST SECRET");
    let ctx = context(&env, "ctx", &[("tfile", "target"), ("realdir/sub/f", "inner"), ("g/a.txt", "a"), ("dir/file", "x")]);
    symlink("tfile", ctx.join("link")).unwrap();
    symlink("/tfile", ctx.join("abslink")).unwrap();
    symlink("realdir", ctx.join("dlink")).unwrap();
    symlink("../tfile", ctx.join("g/b.txt")).unwrap();
    nix::unistd::mkfifo(&ctx.join("dir/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(ctx.join("dir/sock")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY link abslink /d/\nCOPY dlink /e/\nCOPY g/*.txt /f/\nCOPY dlink /h\nCOPY link /single\nCOPY dir /all/\n",
    )
    .unwrap();
    let (_, log) = build_ok(&env, &ctx, &["-t", "sl"]);
    let tree = |img: &str, dirs: &str| {
        env.ok(&["run", "--rm", img, "sh", "-c", &format!("cd / && find {dirs} | sort | while read p; do if [ -f \"$p\" ]; then echo \"$p=$(cat $p)\"; elif [ -L \"$p\" ]; then echo \"$p->\"; else echo \"$p/\"; fi; done")])
    };
    assert_eq!(
        tree("sl", "d e f h single all"),
        "all/\nall/file=x\nd/\nd/abslink=target\nd/link=target\ne/\ne/sub/\ne/sub/f=inner\nf/\nf/a.txt=a\nf/b.txt=target\nh/\nh/sub/\nh/sub/f=inner\nsingle=target\n"
    );
    assert!(log.contains("line 7: COPY: fifos, sockets and devices are not copied: dir/fifo, dir/sock"), "{log}");
    // Hostile: a glob's symlink out of the context resolves inside it, to nothing there: an
    // error, as docker's ("not found"), and no host file read.
    symlink(&secret, ctx.join("g/c.txt")).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY g/*.txt /f/\n").unwrap();
    let o = build(&env, &ctx, &[]);
    assert!(
        !o.status.success()
            && err(&o).contains("Dockerfile:2: COPY: g/*.txt in build context: g/c.txt: its target is not in the build context"),
        "{}",
        err(&o)
    );
    std::fs::remove_file(ctx.join("g/c.txt")).unwrap();
    // A fifo named on its own is an error naming the line (docker copies nothing, silently).
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY dir/fifo /x\n").unwrap();
    build_fails(&env, &ctx, &[], "Dockerfile:2: COPY: dir/fifo in build context: is a fifo");

    // .dockerignore: later lines win, `!` re-includes at the top level too; an excluded
    // directory is walked only for exceptions that name a path below it literally, and
    // then brings its parents; a glob-led exception re-includes nothing under it.
    let ign = context(
        &env,
        "ign",
        &[
            ("a.txt", "a"),
            ("keep.txt", "k"),
            ("sub/x.txt", "x"),
            ("sub/keep.txt", "sk"),
            ("build/out.o", "o"),
            ("build/keep/k.txt", "bk"),
            ("node/m.js", "m"),
        ],
    );
    std::fs::write(ign.join("Dockerfile"), "FROM busybox\nCOPY . /out/\n").unwrap();
    let cases = [
        ("*\n!keep.txt\n!sub/keep.txt\n", "out/\nout/keep.txt=k\nout/sub/\nout/sub/keep.txt=sk\n"),
        ("build\n!build/keep/k.txt\nnode\n!**/m.js\n*.txt\n!a.txt\n", "out/\nout/.dockerignore=build\n!build/keep/k.txt\nnode\n!**/m.js\n*.txt\n!a.txt\nout/Dockerfile=FROM busybox\nCOPY . /out/\nout/a.txt=a\nout/build/\nout/build/keep/\nout/build/keep/k.txt=bk\nout/sub/\nout/sub/keep.txt=sk\nout/sub/x.txt=x\n"),
        ("*\n!*/keep.txt\n!node/nothing\n", "out/\nout/node/\n"),
    ];
    for (rules, want) in cases {
        std::fs::write(ign.join(".dockerignore"), rules).unwrap();
        build_ok(&env, &ign, &["-t", "ign"]);
        assert_eq!(tree("ign", "out"), want, "{rules:?}");
    }
    // An excluded directory named as the source, with an exception below it.
    std::fs::write(ign.join(".dockerignore"), "build\n!build/keep/k.txt\n").unwrap();
    std::fs::write(ign.join("Dockerfile"), "FROM busybox\nCOPY build /out/\n").unwrap();
    build_ok(&env, &ign, &["-t", "ign"]);
    assert_eq!(tree("ign", "out"), "out/\nout/keep/\nout/keep/k.txt=bk\n");
    assert_clean(&env);
}

fn bzip2(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn xz(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::with_preset(1)).unwrap();
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// ADD unpacks bzip2 and xz archives as it does gzip ones (docker's three), copies a
/// compressed file that holds no tar as it is, and stops their bombs and `..` entries
/// as a layer's, leaving nothing behind.
#[test]
fn add_unpacks_bzip2_and_xz_archives_with_the_gzip_limits() {
    let env = Env::new("build-add-comp");
    load_busybox(&env);
    let t = Layer::new().dir("pkg/", 0o755).file("pkg/data", 0o644, b"from the archive").tar();
    let ctx = context(&env, "ctx", &[]);
    std::fs::write(ctx.join("p.tar.bz2"), bzip2(&t)).unwrap();
    std::fs::write(ctx.join("p.tar.xz"), xz(&t)).unwrap();
    std::fs::write(ctx.join("p.tar.gz"), gzip(&t)).unwrap();
    std::fs::write(ctx.join("t.txt.bz2"), bzip2(b"not a tar")).unwrap();
    std::fs::write(ctx.join("t.txt.xz"), xz(b"not a tar")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nADD p.tar.bz2 /b/\nADD p.tar.xz /x/\nADD p.tar.gz /g/\nADD t.txt.bz2 t.txt.xz /t/\n",
    )
    .unwrap();
    build_ok(&env, &ctx, &["-t", "add"]);
    assert_eq!(env.ok(&["run", "--rm", "add", "cat", "/b/pkg/data", "/x/pkg/data", "/g/pkg/data"]), "from the archive".repeat(3));
    assert_eq!(
        env.ok(&["run", "--rm", "add", "sh", "-c", "ls /t; bunzip2 -c /t/t.txt.bz2; unxz -c /t/t.txt.xz"]),
        "t.txt.bz2\nt.txt.xz\nnot a tarnot a tar"
    );
    // Hostile: bombs (4 MiB of zeros past a 1 MiB cap) and an entry climbing out.
    let bomb = Layer::new().file("zeros", 0o644, &vec![0u8; 4 << 20]).tar();
    let climb = Layer::new().raw(tar::EntryType::Regular, "../../escape", 0o644, b"out", "").tar();
    for (name, body, want) in [
        ("bomb.tar.bz2", bzip2(&bomb), "decompression bomb"),
        ("bomb.tar.xz", xz(&bomb), "decompression bomb"),
        ("climb.tar.xz", xz(&climb), ".."),
        ("climb.tar.bz2", bzip2(&climb), ".."),
    ] {
        std::fs::write(ctx.join(name), body).unwrap();
        std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nADD {name} /opt/\n")).unwrap();
        let cg = cgroup_parent(&env);
        let o = env.ctl_env(&["build", "--cgroup-parent", &cg, ctx.to_str().unwrap()], &[("CAPSA_MAX_LAYER_BYTES", "1048576")]);
        assert!(!o.status.success(), "{name}: {}", out(&o));
        assert!(err(&o).contains("Dockerfile:2: ADD: ") && err(&o).contains(want), "{name}: {}", err(&o));
        assert!(!env.dir.join("escape").exists() && !ctx.join("escape").exists(), "{name} wrote outside");
        assert_clean(&env);
    }
    // An xz header asking for a 1.5 GiB dictionary is refused before anything is allocated
    // (a hand-made block header: LZMA2 dictionary byte 39, its CRC32 fixed).
    let mut x = xz(&t);
    let hdr = 12;
    let size = (x[hdr] as usize + 1) * 4;
    assert_eq!(&x[hdr + 2..hdr + 4], &[0x21, 0x01], "the block's filter is LZMA2 with one property byte");
    x[hdr + 4] = 39;
    let mut crc = flate2::Crc::new();
    crc.update(&x[hdr..hdr + size - 4]);
    x[hdr + size - 4..hdr + size].copy_from_slice(&crc.sum().to_le_bytes());
    std::fs::write(ctx.join("big.tar.xz"), x).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nADD big.tar.xz /opt/\n").unwrap();
    build_fails(&env, &ctx, &[], "Dockerfile:2: ADD: big.tar.xz: xz: the archive needs a dictionary larger than 128 MiB");
    assert_clean(&env);
}

/// `build` as a user at a terminal runs it: under `script` (util-linux, in every Debian),
/// stderr and stdout a pty. Returns what the terminal got and whether the build succeeded.
fn build_on_a_terminal(env: &Env, ctx: &Path, args: &str) -> (String, bool) {
    let cmd = format!(
        "{} --root {} --state-root {} build --cgroup-parent {} {args} {}",
        env!("CARGO_BIN_EXE_capsactl"),
        env.root().display(),
        env.state().display(),
        cgroup_parent(env),
        ctx.display()
    );
    let o = Command::new("script").args(["-qec", &cmd, "/dev/null"]).stdin(std::process::Stdio::null()).output().unwrap();
    (out(&o), o.status.success())
}

/// `--progress auto` (the default) is the tty view on a terminal and plain lines
/// elsewhere; the view redraws the running step and its last output lines in place,
/// keeps one line per finished step, shows a failing step's output, and passes none of
/// the image's escape sequences to the terminal.
#[test]
fn progress_tty_on_a_terminal_and_plain_elsewhere() {
    let env = Env::new("build-progress");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            ("Dockerfile", "FROM busybox\nRUN for i in 1 2 3 4 5 6 7 8 9; do echo line-$i; sleep 0.1; done; printf '\\033]0;pwned\\007\\033[2J'\nCOPY f /f\n"),
            ("f", "f"),
        ],
    );
    let (tty, ok) = build_on_a_terminal(&env, &ctx, "--no-cache -t p1");
    assert!(ok, "{tty}");
    for want in ["\x1b[J", "=> [stage-0 2/3] RUN for i in", " > line-", "=> [stage-0 3/3] COPY f /f  ", "FINISHED"] {
        assert!(tty.contains(want), "no {want:?} in the tty view:\n{tty}");
    }
    assert!(!tty.contains("#2 [stage-0"), "plain lines in the tty view:\n{tty}");
    assert!(!tty.contains("\x1b]0;pwned") && !tty.contains("\x1b[2J"), "the image's escapes reached the terminal:\n{tty}");
    // The same with --progress plain on the terminal, and auto without one: lines as before.
    let (plain, ok) = build_on_a_terminal(&env, &ctx, "--progress plain -t p2");
    assert!(ok && plain.contains("#2 [stage-0 2/3] RUN") && plain.contains("#2 CACHED") && !plain.contains("\x1b[J"), "{plain}");
    let (_, log) = build_ok(&env, &ctx, &["--no-cache", "-t", "p3"]);
    assert!(log.contains("#2 [stage-0 2/3] RUN") && log.contains("line-9\n") && !log.contains("\x1b[J"), "{log}");
    // Stages built side by side (their steps in worker processes) feed the same view.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS a\nRUN echo a > /a; sleep 0.3\nFROM busybox AS b\nRUN echo b > /b; sleep 0.3\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
    )
    .unwrap();
    let (tty, ok) = build_on_a_terminal(&env, &ctx, "--progress tty -t par");
    assert!(ok, "{tty}");
    for want in [
        "=> [a 2/2] RUN echo a > /a; sleep 0.3  ",
        "=> [b 2/2] RUN echo b > /b; sleep 0.3  ",
        "=> [stage-2 3/3] COPY --from=b /b /b  ",
        "FINISHED",
    ] {
        assert!(tty.contains(want), "no {want:?} in the tty view:\n{tty}");
    }
    assert!(!tty.contains("ERROR") && !tty.contains("#2 [a"), "{tty}");
    assert_eq!(env.ok(&["run", "--rm", "par", "cat", "/a", "/b"]), "a\nb\n");
    // A stage failing beside another: its step marked, its output shown through the view.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox AS a\nRUN sleep 2\nFROM busybox AS b\nRUN echo b-fails; exit 4\nFROM busybox\nCOPY --from=a /bin/sh /a\nCOPY --from=b /bin/sh /b\n",
    )
    .unwrap();
    let (tty, ok) = build_on_a_terminal(&env, &ctx, "--progress tty");
    assert!(!ok, "{tty}");
    for want in ["=> ERROR [b 2/2] RUN echo b-fails; exit 4", "b-fails", "FAILED", "exit code: 4"] {
        assert!(tty.contains(want), "no {want:?}:\n{tty}");
    }
    // A failing RUN: its step marked, its output shown, nothing left behind.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN echo before-fail; exit 3\n").unwrap();
    let (tty, ok) = build_on_a_terminal(&env, &ctx, "--progress tty");
    assert!(!ok, "{tty}");
    for want in ["=> ERROR [stage-0 2/2] RUN echo before-fail; exit 3", "FAILED", "before-fail", "Dockerfile:2: RUN: process"] {
        assert!(tty.contains(want), "no {want:?}:\n{tty}");
    }
    build_fails(&env, &ctx, &["--progress", "rawjson"], "--progress rawjson: not implemented yet");
    build_fails(&env, &ctx, &["--progress", "fancy"], "--progress fancy: want auto, plain, tty, quiet or rawjson");
    assert_clean(&env);
}

/// `-o type=local|tar` (and `-o DIR`) write the image's filesystem as docker's do
/// (paths relative, no `./`); the image's symlinks stay symlinks, and a symlink already
/// in the destination directory is replaced, never followed.
#[test]
fn output_local_and_tar_write_the_image_filesystem() {
    let env = Env::new("build-output");
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    load_escaping_base(&env, &outside);
    let ctx = context(&env, "ctx", &[("Dockerfile", "FROM evil\nRUN echo built > /built && mkdir /d && echo in-d > /d/f\n")]);
    let dest = env.dir.join("out");
    std::fs::create_dir_all(&dest).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("d")).unwrap();
    std::os::unix::fs::symlink(outside.join("built"), dest.join("built")).unwrap();
    build_ok(&env, &ctx, &["-t", "o1", "-o", &format!("type=local,dest={}", dest.display())]);
    assert_eq!(std::fs::read_to_string(dest.join("built")).unwrap(), "built\n");
    assert_eq!(std::fs::read_to_string(dest.join("d/f")).unwrap(), "in-d\n");
    assert!(std::fs::symlink_metadata(dest.join("d")).unwrap().is_dir(), "the destination's symlink was followed");
    assert_eq!(std::fs::read_link(dest.join("target")).unwrap(), outside);
    assert!(dest.join("bin/busybox").is_file());
    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "written outside the destination: {left:?}");
    // `-o DIR` is type=local.
    let short = env.dir.join("short");
    build_ok(&env, &ctx, &["-o", short.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(short.join("built")).unwrap(), "built\n");
    // type=tar to a file and to STDOUT (then without the image id).
    let names = |b: &[u8]| -> Vec<String> {
        let mut ar = tar::Archive::new(b);
        ar.entries().unwrap().map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned()).collect()
    };
    let tarp = env.dir.join("fs.tar");
    build_ok(&env, &ctx, &["-o", &format!("type=tar,dest={}", tarp.display())]);
    let listed = names(&std::fs::read(&tarp).unwrap());
    for want in ["built", "d/", "d/f", "target", "up", "bin/busybox"] {
        assert!(listed.iter().any(|n| n == want), "no {want} in {listed:?}");
    }
    assert!(listed.iter().all(|n| !n.starts_with('/') && !n.starts_with("./")), "{listed:?}");
    let cg = cgroup_parent(&env);
    let o = env.ctl(&["build", "--cgroup-parent", &cg, "-o", "type=tar,dest=-", ctx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(names(&o.stdout), listed, "the tar on STDOUT, and nothing else");
    // Bad destinations: clear errors, nothing left behind.
    build_fails(&env, &ctx, &["-o", "type=local,dest=-"], "-o type=local,dest=-: a directory is needed");
    build_fails(
        &env,
        &ctx,
        &["-o", "type=tar,dest=/nonexistent-capsa-dir/x.tar"],
        "-o type=tar,dest=/nonexistent-capsa-dir/x.tar: No such file",
    );
    build_fails(&env, &ctx, &["-o", "type=tar"], "-o type=tar: dest=PATH is required");
    assert_clean(&env);
}

/// COPY --exclude (BuildKit's, docker's docs' example first): patterns as .dockerignore's,
/// matched against a glob's matches and, below a source directory, relative to it.
#[test]
fn copy_exclude_leaves_out_what_its_patterns_match() {
    let env = Env::new("build-exclude");
    load_busybox(&env);
    let files = [
        ("home.txt", "t"),
        ("homer.md", "m"),
        ("homework.c", "c"),
        ("src/a.c", "a"),
        ("src/a.o", "o"),
        ("src/sub/b.o", "b"),
        ("src/README.md", "r"),
        ("src/keep/x", "x"),
    ];
    let ctx = context(&env, "ctx", &files);
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY --exclude=*.txt hom* /m/\nCOPY --exclude=*.o --exclude=README.md src /s/\nCOPY --exclude=**/*.o --exclude=keep src /t/\n",
    )
    .unwrap();
    build_ok(&env, &ctx, &["-t", "ex"]);
    let tree = env.ok(&["run", "--rm", "ex", "sh", "-c", "cd / && find m s t | sort"]);
    assert_eq!(tree, "m\nm/homer.md\nm/homework.c\ns\ns/a.c\ns/keep\ns/keep/x\ns/sub\ns/sub/b.o\nt\nt/README.md\nt/a.c\nt/sub\n");
    // Another pattern is another step: not a cache hit on the first.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --exclude=*.md hom* /m/\n").unwrap();
    build_ok(&env, &ctx, &["-t", "ex2"]);
    assert_eq!(env.ok(&["run", "--rm", "ex2", "ls", "/m"]), "home.txt\nhomework.c\n");
    // Everything a glob matches excluded: nothing to copy, as an empty glob.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY --exclude=hom* hom* /m/\n").unwrap();
    build_fails(&env, &ctx, &[], "Dockerfile:2: COPY: hom* in build context: no source files were specified");
    assert_clean(&env);
}

/// A RUN that writes a random uuid tells whether it ran again.
#[test]
fn cache_hits_on_an_unchanged_rebuild_and_misses_after_a_change() {
    let env = Env::new("build-cache");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            ("Dockerfile", "FROM busybox\nRUN cat /proc/sys/kernel/random/uuid > /before\nCOPY app.txt /app.txt\nRUN cat /proc/sys/kernel/random/uuid > /after\nCMD cat /before /after /app.txt\n"),
            ("app.txt", "v1\n"),
        ],
    );
    let (id1, log1) = build_ok(&env, &ctx, &["-t", "c:1"]);
    assert_eq!(log1.matches("DONE").count(), 3, "{log1}");
    let first = env.ok(&["run", "--rm", "c:1"]);
    // Unchanged: every step cached, no RUN ran (the stamps are the same), same image.
    let (id2, log2) = build_ok(&env, &ctx, &["-t", "c:2"]);
    assert_eq!(log2.matches("CACHED").count(), 3, "{log2}");
    assert!(!log2.contains("DONE"), "{log2}");
    assert_eq!(id1, id2);
    assert_eq!(env.ok(&["run", "--rm", "c:2"]), first);
    // A context file changed: the COPY and what follows run again, not what precedes.
    std::fs::write(ctx.join("app.txt"), "v2\n").unwrap();
    let (id3, log3) = build_ok(&env, &ctx, &["-t", "c:3"]);
    assert_eq!(log3.matches("CACHED").count(), 1, "{log3}");
    assert_ne!(id3, id1);
    let third = env.ok(&["run", "--rm", "c:3"]);
    let (a, b): (Vec<&str>, Vec<&str>) = (first.lines().collect(), third.lines().collect());
    assert_eq!(a[0], b[0], "the RUN before the COPY was cached");
    assert_ne!(a[1], b[1], "the RUN after the COPY ran again");
    assert_eq!(b[2], "v2");
    // Only the mode changed: a miss too.
    let mut perm = std::fs::metadata(ctx.join("app.txt")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(ctx.join("app.txt"), perm).unwrap();
    let (_, log4) = build_ok(&env, &ctx, &["-t", "c:4"]);
    assert_eq!(log4.matches("CACHED").count(), 1, "{log4}");
    // --no-cache: everything runs.
    let (_, log5) = build_ok(&env, &ctx, &["--no-cache", "-t", "c:5"]);
    assert_eq!(log5.matches("DONE").count(), 3, "{log5}");
    assert!(!log5.contains("CACHED"), "{log5}");
    // After image prune -a the cache entries whose layers went are misses, not errors.
    env.ok(&["rmi", "c:1", "c:2", "c:3", "c:4", "c:5"]);
    env.ok(&["image", "prune", "-a", "-f"]);
    assert_eq!(env.db("SELECT count(*) FROM build_cache WHERE chain_id IS NOT NULL"), "0");
    load_busybox(&env);
    let (_, log6) = build_ok(&env, &ctx, &["-t", "c:6"]);
    assert_eq!(log6.matches("DONE").count(), 3, "{log6}");
    assert_clean(&env);
}

/// A source replaced while COPY checksums it and copies it: whatever the racing builds
/// did (succeed or refuse), no cache entry may name a checksum its layer does not hold.
/// Afterwards the file is set to each content in turn and built again: a cached layer
/// must then hold exactly that content. (Without the check that the bytes copied are the
/// bytes hashed, a build that hashed A and copied B cached B under A's key.)
#[test]
fn a_source_changed_during_copy_never_caches_a_layer_under_another_checksum() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = Env::new("build-copy-race");
    load_busybox(&env);
    let a = "A".repeat(1 << 20);
    let b = "B".repeat(1 << 20);
    let ctx = context(&env, "ctx", &[("Dockerfile", "FROM busybox\nCOPY f /f\n"), ("f", &a)]);
    let stop = AtomicBool::new(false);
    let mut refused = 0;
    // No assertion inside the scope: a panic there would wait for the writer forever.
    let outs = std::thread::scope(|sc| {
        sc.spawn(|| {
            // Whole-file swaps (rename over f): each read sees A or B, never a mix.
            let (tmp, f) = (ctx.join(".swap"), ctx.join("f"));
            let mut next_b = true;
            while !stop.load(Ordering::Relaxed) {
                std::fs::write(&tmp, if next_b { &b } else { &a }).unwrap();
                std::fs::rename(&tmp, &f).unwrap();
                next_b = !next_b;
            }
        });
        let outs: Vec<Output> = (0..12).map(|_| build(&env, &ctx, &[])).collect();
        stop.store(true, Ordering::Relaxed);
        outs
    });
    for o in outs.iter().filter(|o| !o.status.success()) {
        // Refused at the copy (the bytes copied are not the bytes hashed) or when the
        // source was looked up (the file found was replaced under its name).
        let e = err(o);
        assert!(
            e.contains("a source changed while it was being copied") || e.contains("the source changed while it was being read"),
            "{e}"
        );
        refused += 1;
    }
    for (name, content) in [("a", &a), ("b", &b), ("a2", &a)] {
        std::fs::write(ctx.join("f"), content).unwrap();
        build_ok(&env, &ctx, &["-t", name]);
        let got = env.ok(&["run", "--rm", name, "sh", "-c", "head -c 1 /f; wc -c < /f; tr -d AB < /f | wc -c"]);
        assert_eq!(got, format!("{}1048576\n0\n", &content[..1]), "image {name} (after {refused} refused racing builds)");
    }
    assert_clean(&env);
}

#[test]
fn a_failing_run_exits_non_zero_and_leaves_nothing() {
    let env = Env::new("build-fail");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo ok > /ok\nRUN echo partial > /partial; \\\n    echo to stderr >&2; exit 7\nRUN echo never\n",
        )],
    );
    let blobs = env.count("blobs/sha256");
    let o = build(&env, &ctx, &["-t", "broken"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("Dockerfile:3: RUN: process") && e.contains("exit code: 7"), "{e}");
    assert!(e.contains("to stderr"), "the RUN's output is shown: {e}");
    assert!(!e.contains("never"));
    assert!(env.fails(&["image", "inspect", "broken"]).contains("broken"));
    // The first RUN's layer is kept for the cache; nothing of the failed one.
    assert_eq!(env.count("blobs/sha256"), blobs + 1);
    assert_eq!(env.db("SELECT count(*) FROM build_cache"), "1");
    assert_clean(&env);
    // -q: the output of the failed RUN is shown with the error.
    build_fails(&env, &ctx, &["-q"], "to stderr");
    assert_clean(&env);
}

#[test]
fn hostile_context_symlinks_stay_inside_the_context() {
    let env = Env::new("build-hostile-ctx");
    load_busybox(&env);
    let secret = env.write("host-secret", b"HOST SECRET");
    let ctx = context(&env, "ctx", &[("inside/hostname", "the context's own")]);
    std::os::unix::fs::symlink(&secret, ctx.join("abs")).unwrap();
    std::os::unix::fs::symlink("../host-secret", ctx.join("rel")).unwrap();
    std::os::unix::fs::symlink("/", ctx.join("root")).unwrap();
    std::os::unix::fs::symlink("../../../../../../..", ctx.join("inside/up")).unwrap();
    // A symlink as the source resolves inside the context: these point at nothing there.
    for src in ["abs", "rel", "root/host-secret"] {
        std::fs::write(ctx.join("Dockerfile"), format!("FROM busybox\nCOPY {src} /x\n")).unwrap();
        let o = build(&env, &ctx, &[]);
        assert!(!o.status.success(), "COPY {src} succeeded: {}", out(&o));
        assert!(err(&o).contains("not found"), "{}", err(&o));
    }
    // `root` is the context itself; `inside/up` is the context's top, not the host's /.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY root/inside/hostname /a\nCOPY inside/up/ /b/\nCOPY . /all/\n").unwrap();
    build_ok(&env, &ctx, &["-t", "hc"]);
    assert_eq!(env.ok(&["run", "--rm", "hc", "cat", "/a"]), "the context's own");
    assert_eq!(env.ok(&["run", "--rm", "hc", "cat", "/b/inside/hostname"]), "the context's own");
    // Below a copied directory symlinks are copied as they are, never followed.
    assert_eq!(env.ok(&["run", "--rm", "hc", "readlink", "/all/abs"]).trim(), secret.to_str().unwrap());
    // A link to / is one to / in the layer (it came out as `//`).
    assert_eq!(env.ok(&["run", "--rm", "hc", "readlink", "/all/root"]), "/\n");
    let all = env.ok(&["run", "--rm", "hc", "sh", "-c", "grep -r 'HOST SECRET' /a /b /all 2>/dev/null; true"]);
    assert!(all.is_empty(), "host file copied: {all}");
    // The context's Dockerfile is read inside the context: a symlink to a host file is not
    // followed out of it (its first line was shown as an "unknown instruction"), a FIFO
    // does not hang the build.
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink(&secret, ctx.join("Dockerfile")).unwrap();
    let o = build(&env, &ctx, &[]);
    assert!(!o.status.success() && !err(&o).contains("HOST SECRET"), "{}", err(&o));
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    nix::unistd::mkfifo(&ctx.join("Dockerfile"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    build_fails(&env, &ctx, &[], "not a regular file");
    assert_clean(&env);
}

/// Loads `evil:latest`: busybox with `/target` pointing at `outside` (absolute) and `/up`
/// climbing out of the rootfs by `..`.
fn load_escaping_base(env: &Env, outside: &Path) {
    let bb = Layer::new().busybox().tar();
    let evil = Layer::new().symlink("target", outside.to_str().unwrap()).symlink("up", "../../../../../../..").tar();
    let cfg = config(&[bb.clone(), evil.clone()], json!({"Cmd": ["sh"]}));
    let p = env.write("evil.tar", &docker_archive(&[bb, evil], &cfg, &["evil:latest"]));
    env.ok(&["load", "-i", p.to_str().unwrap()]);
}

#[test]
fn hostile_rootfs_symlinks_do_not_lead_copy_out_of_it() {
    let env = Env::new("build-hostile-rootfs");
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    load_escaping_base(&env, &outside);
    let ctx = context(&env, "ctx", &[("f", "payload"), ("d/g", "payload2")]);
    let up = format!("up{}/", outside.display());
    std::fs::write(ctx.join("Dockerfile"), format!("FROM evil\nCOPY f /target/f\nCOPY d {up}\nCOPY f /target/new/dir/\n")).unwrap();
    build_ok(&env, &ctx, &["-t", "ev"]);
    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "COPY wrote outside the rootfs: {left:?}");
    // The files are inside the image, where the symlinks lead within it.
    let o = env.ok(&["run", "--rm", "ev", "sh", "-c", &format!("cat {0}/f {0}/g {0}/new/dir/f", outside.display())]);
    assert_eq!(o, "payloadpayload2payload");
    assert_clean(&env);
}

#[test]
fn heredocs_shell_onbuild_healthcheck_and_config() {
    let env = Env::new("build-heredoc");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS base\n\
             ENV NAME=capsa\n\
             RUN <<EOF\n\
             echo line1 > /h\n\
             echo \"$NAME\" >> /h\n\
             EOF\n\
             RUN cat <<'EOT' > /lit\n\
             $NAME stays\n\
             EOT\n\
             COPY <<EOF /etc/greeting\n\
             hi $NAME\n\
             EOF\n\
             SHELL [\"/bin/sh\", \"-ec\"]\n\
             RUN echo $0 $- > /shell\n\
             HEALTHCHECK --interval=30s --retries=2 CMD wget -q localhost || exit 1\n\
             ONBUILD RUN echo triggered > /onbuild\n\
             MAINTAINER someone\n\
             VOLUME /data\n\
             FROM base\n\
             RUN cat /onbuild\n",
        )],
    );
    build_ok(&env, &ctx, &["--target", "base", "-t", "hd-base"]);
    assert_eq!(env.ok(&["run", "--rm", "hd-base", "cat", "/h", "/lit", "/etc/greeting"]), "line1\ncapsa\n$NAME stays\nhi capsa\n");
    assert!(env.ok(&["run", "--rm", "hd-base", "cat", "/shell"]).contains('e'));
    let cfg = image_config(&env, "hd-base");
    assert_eq!(
        cfg["Config"]["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "wget -q localhost || exit 1"], "Interval": 30_000_000_000u64, "Retries": 2})
    );
    assert_eq!(cfg["Config"]["OnBuild"], json!(["RUN echo triggered > /onbuild"]));
    assert_eq!(cfg["Config"]["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(cfg["Author"], "someone");
    // A stage on it runs the trigger first; the child does not inherit the trigger.
    build_ok(&env, &ctx, &["-t", "hd-child"]);
    assert_eq!(env.ok(&["run", "--rm", "hd-child", "cat", "/onbuild"]), "triggered\n");
    assert!(image_config(&env, "hd-child")["Config"]["OnBuild"].is_null());
    assert_clean(&env);
}

/// A base image is hostile: its ONBUILD triggers obey the rules an ONBUILD written in a
/// Dockerfile does (no ONBUILD ONBUILD, FROM or MAINTAINER), one instruction each.
#[test]
fn hostile_onbuild_triggers_of_a_base_image_are_refused() {
    let env = Env::new("build-onbuild");
    let ctx = context(&env, "ctx", &[]);
    for (i, trigger) in ["ONBUILD RUN echo nested", "FROM busybox", "MAINTAINER x", "RUN true\nRUN echo two"].iter().enumerate() {
        let l = Layer::new().busybox().tar();
        let cfg = config(std::slice::from_ref(&l), json!({"Cmd": ["sh"], "OnBuild": [trigger]}));
        let p = env.write("evil.tar", &docker_archive(&[l], &cfg, &[&format!("evil{i}:1")]));
        env.ok(&["load", "-i", p.to_str().unwrap()]);
        std::fs::write(ctx.join("Dockerfile"), format!("FROM evil{i}:1\nRUN true\n")).unwrap();
        let o = build(&env, &ctx, &[]);
        assert!(!o.status.success(), "{trigger:?} was run: {}", err(&o));
        assert!(err(&o).contains("ONBUILD trigger"), "{trigger:?}: {}", err(&o));
    }
    assert_clean(&env);
}

#[test]
fn reproducible_with_source_date_epoch_and_round_trip_through_a_registry() {
    let env = Env::new("build-repro");
    load_busybox(&env);
    let ctx = context(&env, "ctx", &[("Dockerfile", "FROM busybox\nCOPY f /f\nRUN echo x > /x\nCMD cat /f /x\n"), ("f", "f\n")]);
    let epoch = [("SOURCE_DATE_EPOCH", "1700000000")];
    let b = |args: &[&str]| {
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        a.push(ctx.to_str().unwrap());
        let cg = cgroup_parent(&env);
        a.splice(1..1, ["--cgroup-parent", cg.as_str()]);
        let o = env.ctl_env(&a, &epoch);
        assert!(o.status.success(), "{}", err(&o));
        out(&o).trim().to_string()
    };
    let id1 = b(&["--no-cache", "-t", "r:1"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let id2 = b(&["--no-cache", "-t", "r:2"]);
    assert_eq!(id1, id2, "same Dockerfile, context and SOURCE_DATE_EPOCH: same image");
    let cfg = image_config(&env, "r:1");
    assert_eq!(cfg["Created"], "2023-11-14T22:13:20Z");
    // -o exports it as `save` would: an archive that loads back.
    let tarp = env.dir.join("out.tar");
    let dest = format!("type=docker,dest={}", tarp.display());
    let id3 = b(&["-t", "r:3", "-o", &dest]);
    assert_eq!(id3, id1);
    let oci = env.dir.join("out-oci.tar");
    b(&["-o", &format!("type=oci,dest={}", oci.display())]);
    let o = Command::new("tar").arg("-tf").arg(&oci).output().unwrap();
    assert!(out(&o).contains("index.json"), "{}", out(&o));
    env.ok(&["rmi", "r:3"]);
    assert!(env.ok(&["load", "-i", tarp.to_str().unwrap()]).contains("r:3"));
    let o = build(&env, &ctx, &["-o", "type=registry,dest=x"]);
    assert!(err(&o).contains("-o type=registry: not implemented yet"), "{}", err(&o));
    // Push to a local registry, remove, pull back, run.
    {
        let reg = registry_support::Registry::start(&env.dir.join("reg"), registry_support::Auth::None);
        let name = format!("{}/built:1", reg.host());
        env.ok(&["tag", "r:1", &name]);
        env.ok(&["push", &name]);
        env.ok(&["rmi", "r:1", "r:2", "r:3", &name]);
        env.ok(&["pull", &name]);
        assert_eq!(env.ok(&["run", "--rm", &name]), "f\nx\n");
        // --network is RUN's network only: a missing base image is pulled even with
        // `--network none`, as docker does (checked: docker 20.10 with BuildKit pulls a
        // removed base from a local registry under --network none), and RUN has only lo.
        env.ok(&["rmi", &name]);
        let net = context(&env, "net", &[("Dockerfile", &format!("FROM {name}\nRUN grep -c : /proc/net/dev > /ifaces\n"))]);
        build_ok(&env, &net, &["--network", "none", "-t", "net"]);
        assert_eq!(env.ok(&["run", "--rm", "net", "cat", "/ifaces"]), "1\n");
    }
    assert_clean(&env);
}

#[test]
fn a_build_killed_during_a_run_is_cleaned_up_by_the_next_one() {
    let env = Env::new("build-killed");
    load_busybox(&env);
    let ctx = context(&env, "ctx", &[("Dockerfile", "FROM busybox\nRUN sleep 1000\n")]);
    let mut child = build_command(&env, &ctx, &[]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    // Until the RUN's container runs (its capsa state exists), then SIGKILL the build.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(env.state()).map(|r| r.count()).unwrap_or(0) == 0 {
        assert!(std::time::Instant::now() < end, "the RUN did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!env.mounts().is_empty(), "the killed build left its mounts (what the next build must clean)");
    // The next build finds the leftovers and removes them: container, mounts, scratch, cgroup.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    build_ok(&env, &ctx, &[]);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.procs().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_clean(&env);
}

/// `build` run in a network namespace of its own with its loopback up (RUN --network host
/// then shares that namespace, and nothing else).
fn build_in_netns(env: &Env, ctx: &Path, args: &[&str]) -> Output {
    let cg = cgroup_parent(env);
    let mut c = Command::new("unshare");
    c.args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh", env!("CARGO_BIN_EXE_capsactl")]);
    c.arg("--root").arg(env.root()).arg("--state-root").arg(env.state());
    c.args(["build", "--cgroup-parent", &cg, "--network", "host"]).args(args).arg(ctx);
    c.stdin(std::process::Stdio::null()).output().unwrap()
}

#[test]
fn independent_stages_build_side_by_side_and_a_failure_stops_the_others() {
    let env = Env::new("build-parallel");
    load_busybox(&env);
    // Stage a waits for stage b to connect to it: built one after the other, either
    // would wait in vain (a for 20 s, b for 20 s of retries) and fail. a's nc reads its
    // stdin from a FIFO that never ends (at EOF of /dev/null it would close its side,
    // and b's nc might take that end before sending).
    let ctx = context(
        &env,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox AS a\n\
                 RUN mkfifo /tmp/f && exec 3<>/tmp/f && rm /tmp/f && timeout 20 nc -l -p 7000 <&3 > /got && test -s /got\n\
                 \n\
                 FROM busybox AS b\n\
                 RUN for i in $(seq 200); do echo hello from b | nc 127.0.0.1 7000 && exit 0; sleep 0.1; done; exit 1\n\
                 \n\
                 FROM busybox\n\
                 COPY --from=a /got /a\n\
                 COPY --from=b /bin/busybox /b\n\
                 CMD [\"cat\", \"/a\"]\n",
            ),
            (
                "Dockerfile.fail",
                "FROM busybox AS a\n\
                 RUN timeout 20 nc -l -p 7001; echo a was not $(echo stopped); exit 9\n\
                 \n\
                 FROM busybox AS b\n\
                 RUN echo b fails; exit 3\n\
                 \n\
                 FROM busybox\n\
                 COPY --from=a / /a\n\
                 COPY --from=b / /b\n",
            ),
        ],
    );
    let o = build_in_netns(&env, &ctx, &["-t", "par"]);
    assert!(o.status.success(), "{}", err(&o));
    let log = err(&o);
    // Every step has its own number, though two processes took them.
    for n in 1..=8 {
        assert_eq!(log.matches(&format!("#{n} [")).count(), 1, "step #{n}:\n{log}");
    }
    assert_eq!(env.ok(&["run", "--rm", "par"]), "hello from b\n");
    // A rebuild is all cache hits (the workers' steps were recorded like any other).
    let o = build_in_netns(&env, &ctx, &["-t", "par"]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(err(&o).matches("CACHED").count(), 4, "{}", err(&o));
    assert_clean(&env);
    // b fails while a's RUN waits: a is stopped (its container, mounts and scratch gone)
    // and b's error is the build's.
    let o = build_in_netns(&env, &ctx, &["-f", ctx.join("Dockerfile.fail").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("Dockerfile.fail:5: RUN:") && e.contains("exit code: 3"), "{e}");
    assert!(!e.contains("a was not stopped") && !out(&o).contains("a was not stopped"), "{e}");
    assert_clean(&env);
    env.ok(&["rmi", "par"]);
}

#[test]
fn concurrent_builds_on_one_store_leave_each_other_alone() {
    let env = Env::new("build-concurrent");
    load_busybox(&env);
    // Each build starts by cleaning the scratch dirs of killed builds: it must never take
    // another's that is being made for one (it once could, between mkdir and flock).
    let ctx = context(&env, "ctx", &[("Dockerfile", "FROM busybox\nENV A=1\nRUN true\n")]);
    for round in 0..3 {
        let kids: Vec<_> = (0..12)
            .map(|_| {
                let mut c = build_command(&env, &ctx, &["--no-cache", "-q"]);
                c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
            })
            .collect();
        for k in kids {
            let o = k.wait_with_output().unwrap();
            assert!(o.status.success(), "round {round}: {}", err(&o));
        }
    }
    assert_clean(&env);
}

#[test]
fn stages_side_by_side_behave_as_one_after_the_other() {
    let env = Env::new("build-sidebyside");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[
            // Two identical steps in stages built side by side: made once, used by both
            // (one after the other, the second would hit the first's cache entry), so a
            // rebuild is the same image.
            (
                "Dockerfile",
                "FROM busybox AS a\n\
                 RUN cat /proc/sys/kernel/random/uuid > /id\n\
                 FROM busybox AS b\n\
                 RUN cat /proc/sys/kernel/random/uuid > /id\n\
                 FROM busybox\n\
                 COPY --from=a /id /a\n\
                 COPY --from=b /id /b\n\
                 CMD [\"cat\", \"/a\", \"/b\"]\n",
            ),
            // An ONBUILD COPY --from of a stage base makes the stage named a dependency.
            (
                "Dockerfile.onbuild",
                "FROM busybox AS a\n\
                 ONBUILD COPY --from=c /c /from-c\n\
                 FROM busybox AS c\n\
                 RUN sleep 0.5; echo c > /c\n\
                 FROM a AS b\n\
                 RUN cat /from-c\n\
                 FROM b\n\
                 COPY --from=c /c /final\n\
                 CMD [\"cat\", \"/from-c\", \"/final\"]\n",
            ),
            // --from sees the global scope only, as BuildKit.
            (
                "Dockerfile.fromarg",
                "ARG G=c\n\
                 FROM busybox AS c\n\
                 RUN echo c > /c\n\
                 FROM busybox\n\
                 ARG SRC=c\n\
                 COPY --from=${G} /c /gc\n\
                 COPY --from=${SRC} /c /yc\n",
            ),
            // A Dockerfile (or a base's ONBUILD) does not get the host's network by itself.
            ("Dockerfile.hostnet", "FROM busybox\nRUN --network=host true\n"),
        ],
    );
    let (id, _) = build_ok(&env, &ctx, &["-t", "twins"]);
    let ids = env.ok(&["run", "--rm", "twins"]);
    let l: Vec<&str> = ids.lines().collect();
    assert!(l.len() == 2 && l[0] == l[1] && l[0].len() == 36, "{ids}");
    let (again, log) = build_ok(&env, &ctx, &["-t", "twins"]);
    assert_eq!(again, id, "{log}");
    let (_, log) = build_ok(&env, &ctx, &["-t", "ob", "-f", ctx.join("Dockerfile.onbuild").to_str().unwrap()]);
    assert_eq!(env.ok(&["run", "--rm", "ob"]), "c\nc\n", "{log}");
    let o = build(&env, &ctx, &["-f", ctx.join("Dockerfile.fromarg").to_str().unwrap()]);
    assert!(
        !o.status.success()
            && err(&o).contains("Dockerfile.fromarg:7: COPY: --from=${SRC}: names nothing (only ARGs declared before the first FROM"),
        "{}",
        err(&o)
    );
    assert!(!err(&o).contains("Dockerfile.fromarg:6"), "{}", err(&o));
    let hostnet = ctx.join("Dockerfile.hostnet");
    build_fails(&env, &ctx, &["-f", hostnet.to_str().unwrap()], "Dockerfile.hostnet:2: RUN: --network=host: network.host is not allowed");
    let o = build_in_netns(&env, &ctx, &["--allow", "network.host", "-f", hostnet.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(env.fails(&["build", "--allow", "everything", ctx.to_str().unwrap()]).contains("--allow everything: unknown entitlement"));
    assert_clean(&env);
}

#[test]
fn a_cancelled_build_stops_its_stages_and_a_killed_one_is_cleaned_up_by_the_next() {
    let env = Env::new("build-cancel");
    load_busybox(&env);
    let ctx = context(
        &env,
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox AS one\nRUN echo one started; sleep 300\nFROM busybox AS two\nRUN echo two started; sleep 300\n\
             FROM busybox\nCOPY --from=one /bin/sh /one\nCOPY --from=two /bin/sh /two\n",
        )],
    );
    let started = |path: &Path| {
        let p = path.to_path_buf();
        until("both RUNs started", move || {
            let e = std::fs::read_to_string(&p).unwrap_or_default();
            e.contains("one started") && e.contains("two started")
        })
    };
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGKILL] {
        let log = env.dir.join(format!("build-{sig}.log"));
        // SIGINT's round with the tty view, which ends the stopped steps as CANCELED.
        let args: &[&str] = if sig == libc::SIGINT { &["--no-cache", "--progress", "tty"] } else { &["--no-cache"] };
        let mut c = build_command(&env, &ctx, args);
        let mut child = c.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        started(&log);
        // SAFETY: kill(2) of our own child with a signal number.
        unsafe { libc::kill(child.id() as i32, sig) };
        let st = child.wait().unwrap();
        let e = std::fs::read_to_string(&log).unwrap();
        if sig == libc::SIGKILL {
            // Its workers die with it (a container's init forked by one, not yet exec'd,
            // has a worker's command line too: it lives in a pid namespace of its own);
            // the next build, or a prune, removes what they left.
            let ours = std::fs::read_link("/proc/self/ns/pid").unwrap();
            let worker = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok().as_ref() == Some(&ours);
            until("the workers are gone", || !env.procs().iter().any(|(p, c)| c.contains("__build-stage") && worker(*p)));
            env.ok(&["image", "prune", "-f"]);
        } else {
            assert_eq!(st.code(), Some(128 + sig), "{e}");
            assert!(e.contains("build cancelled (SIG"), "{e}");
            if sig == libc::SIGINT {
                assert!(e.contains("=> CANCELED [") && e.contains(") CANCELED") && !e.contains("=> ERROR"), "{e}");
            }
        }
        assert_clean(&env);
    }
}

/// RUN --mount, as BuildKit's: binds of the context (.dockerignore applies, read-only
/// unless rw, writes thrown away), of a stage; a cache kept between builds; a tmpfs; a
/// secret. Nothing of a mount is in the layer; a context bind's content is in the key.
#[test]
fn run_mounts_bind_cache_tmpfs_secret() {
    let env = Env::new("build-mounts");
    load_busybox(&env);
    let df = "FROM busybox AS base\n\
        RUN mkdir -p /opt/data && echo from-stage > /opt/data/f\n\
        FROM busybox\n\
        WORKDIR /w\n\
        RUN --mount=type=bind,source=req.txt,target=req.txt cat /w/req.txt > /got-req\n\
        RUN --mount=target=/ctx ls /ctx/src > /ctx-src && { echo x > /ctx/new 2>/dev/null || echo ro > /ctx-ro; }\n\
        RUN --mount=type=bind,target=/rw,rw echo y > /rw/new && cat /rw/req.txt > /rw-ok\n\
        RUN --mount=from=base,source=/opt/data,target=/m cat /m/f > /got-stage\n\
        RUN --mount=type=cache,target=/var/cache/app,id=c1 echo run >> /var/cache/app/count && wc -l < /var/cache/app/count > /cache-count\n\
        RUN --mount=type=cache,target=/c2,id=c2,sharing=locked,uid=1000,mode=0700 --mount=type=cache,target=/c3,id=c3,from=base,source=/opt/data,sharing=private stat -c '%u %a' /c2 > /c2-stat && cat /c3/f > /c3-f\n\
        RUN --mount=type=tmpfs,target=/t,size=1m grep ' /t ' /proc/mounts > /t-mount && touch /t/x\n\
        RUN --mount=type=secret,id=tok --mount=type=secret,id=tok,env=TOK stat -c %a /run/secrets/tok > /secret-mode && wc -c < /run/secrets/tok > /secret-len && echo ${#TOK} > /env-len && grep ' /run/secrets/tok ' /proc/self/mountinfo | sed 's/.* - //' | cut -d' ' -f1 > /secret-fs\n";
    let ctx = context(
        &env,
        "ctx",
        &[("Dockerfile", df), ("req.txt", "alpha\n"), ("src/a.txt", "a\n"), ("src/private.key", "k\n"), (".dockerignore", "src/*.key\n")],
    );
    let secret = env.write("tok", b"s3cret\n");
    let sarg = format!("id=tok,src={}", secret.display());
    let (_, log) = build_ok(&env, &ctx, &["-t", "m:1", "--secret", &sarg]);
    let cat = |img: &str, f: &str| env.ok(&["run", "--rm", img, "cat", f]);
    assert_eq!(cat("m:1", "/got-req"), "alpha\n", "{log}");
    assert_eq!(cat("m:1", "/ctx-src"), "a.txt\n", ".dockerignore applies to a context bind");
    assert_eq!(cat("m:1", "/ctx-ro"), "ro\n", "a bind is read-only by default");
    assert_eq!(cat("m:1", "/rw-ok"), "alpha\n");
    assert!(!ctx.join("new").exists(), "a rw bind's writes reached the context");
    assert_eq!(cat("m:1", "/got-stage"), "from-stage\n");
    assert_eq!(cat("m:1", "/cache-count").trim(), "1");
    assert_eq!(cat("m:1", "/c2-stat"), "1000 700\n", "a cache mount's uid and mode");
    assert_eq!(cat("m:1", "/c3-f"), "from-stage\n", "a cache mount filled from a stage");
    assert!(cat("m:1", "/t-mount").starts_with("tmpfs /t tmpfs"), "{}", cat("m:1", "/t-mount"));
    assert_eq!(cat("m:1", "/secret-mode"), "400\n");
    assert_eq!(cat("m:1", "/secret-len").trim(), "7");
    assert_eq!(cat("m:1", "/env-len").trim(), "7", "env= gives the secret as a variable");
    assert_eq!(cat("m:1", "/secret-fs"), "tmpfs\n", "a secret is kept on a tmpfs, never on the disk");
    // No mount point, nothing written through a mount, no secret in the image.
    let o =
        env.ctl(&["run", "--rm", "m:1", "ls", "-a", "/w", "/rw", "/m", "/t", "/ctx", "/var/cache/app", "/c2", "/c3", "/run/secrets/tok"]);
    assert_eq!(out(&o), "/w:\n.\n..\n", "{}", err(&o));
    let saved = env.dir.join("m.tar");
    env.ok(&["save", "-o", saved.to_str().unwrap(), "m:1"]);
    let mut all = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).unwrap();
        if b.starts_with(&[0x1f, 0x8b]) {
            let mut d = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&b[..]), &mut d).unwrap();
            b = d;
        }
        all.extend(b);
    }
    assert!(!all.windows(6).any(|w| w == b"s3cret"), "the secret is in the image");
    // Unchanged: all cached. The cache mount kept its content across builds (--no-cache
    // runs the RUN again, on the same cache). A change in a bound file misses the cache.
    let (_, log) = build_ok(&env, &ctx, &["-t", "m:2", "--secret", &sarg]);
    assert_eq!(log.matches("CACHED").count(), 10, "{log}");
    build_ok(&env, &ctx, &["-t", "m:3", "--secret", &sarg, "--no-cache"]);
    assert_eq!(cat("m:3", "/cache-count").trim(), "2");
    std::fs::write(ctx.join("req.txt"), "beta\n").unwrap();
    let (_, log) = build_ok(&env, &ctx, &["-t", "m:4", "--secret", &sarg]);
    assert_eq!(cat("m:4", "/got-req"), "beta\n", "{log}");
    // An ignored file's change misses nothing; the secret's change neither (as BuildKit).
    std::fs::write(ctx.join("src/private.key"), "k2\n").unwrap();
    std::fs::write(&secret, b"other\n").unwrap();
    let (_, log) = build_ok(&env, &ctx, &["-t", "m:5", "--secret", &sarg]);
    assert_eq!(log.matches("CACHED").count(), 10, "{log}");
    // The cache mounts stay until a prune; system df counts them with the steps' entries.
    // (Four: c3 is filled from the stage base, which the --no-cache build made anew, a
    // new layer, so a new cache, as BuildKit's.)
    assert_eq!(env.count("build-mounts"), 4);
    let cache_row = || -> Vec<String> {
        let df = env.ok(&["system", "df"]);
        df.lines().find(|l| l.starts_with("Build Cache")).unwrap().split_whitespace().skip(2).map(str::to_string).collect()
    };
    let entries = || env.db("SELECT count(*) FROM build_cache").parse::<usize>().unwrap();
    let row = cache_row();
    assert_eq!(row[0].parse::<usize>().unwrap(), 4 + entries(), "{row:?}");
    assert_eq!(row[1], "0", "no build is using a cache mount: {row:?}");
    assert_ne!(row[2], "0B", "{row:?}");
    // builder prune: the cache mounts and the entries no image holds; -a: every entry.
    env.ok(&["builder", "prune", "-f"]);
    assert_eq!(env.count("build-mounts"), 0);
    assert!(entries() > 0, "the tagged images' steps stay cached");
    env.ok(&["builder", "prune", "-a", "-f"]);
    assert_eq!(entries(), 0);
    assert_eq!(cache_row(), ["0", "0", "0B", "0B"]);
    let (_, log) = build_ok(&env, &ctx, &["-t", "m:6", "--secret", &sarg]);
    assert_eq!(cat("m:6", "/cache-count").trim(), "1", "a new cache mount: {log}");
    // system prune removes cache mounts too.
    for t in ["m:1", "m:2", "m:3", "m:4", "m:5", "m:6"] {
        env.ok(&["rmi", t]);
    }
    env.ok(&["system", "prune", "-f"]);
    assert_eq!(env.count("build-mounts"), 0);
    assert_clean(&env);
}

/// Bad --mount options fail before any step runs, naming the line; a source outside its
/// root (a symlink of the context or a stage aimed at the host) resolves inside it; a
/// required secret not given fails; nothing is left behind.
#[test]
fn run_mounts_refused_and_confined() {
    let env = Env::new("build-mounts-bad");
    load_busybox(&env);
    let host = env.dir.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("host-only"), "HOST\n").unwrap();
    let ctx = context(&env, "ctx", &[("a", "a\n")]);
    std::os::unix::fs::symlink(&host, ctx.join("escape")).unwrap();
    for (df, want) in [
        (
            "FROM busybox\nRUN --mount=type=bind,foo=1,target=/x true\n",
            "Dockerfile:2: RUN --mount=type=bind,foo=1,target=/x: foo: not an option of type=bind",
        ),
        (
            "FROM busybox\nRUN true\nRUN --mount=type=ssh true\n",
            "Dockerfile:3: RUN --mount=type=ssh: type=ssh: SSH agent forwarding is not supported",
        ),
        ("FROM busybox\nRUN --mount=type=nfs,target=/x true\n", "unknown mount type"),
        ("FROM busybox\nRUN --mount=type=cache true\n", "type=cache: target is required"),
        ("FROM busybox\nRUN --mount=type=cache,target=/c,sharing=all true\n", "sharing=all: want shared, private or locked"),
        ("FROM busybox\nRUN --mount=type=secret,id=nope,required true\n", "secret nope: required, but not given"),
        ("FROM busybox\nRUN --mount=source=escape,target=/m cat /m/host-only\n", "source=escape"),
        ("FROM busybox\nRUN --mount=source=nothere,target=/m true\n", "source=nothere"),
    ] {
        std::fs::write(ctx.join("Dockerfile"), df).unwrap();
        build_fails(&env, &ctx, &[], want);
    }
    // A stage's symlink to / and an absolute path of the host: resolved in the stage.
    let df = format!(
        "FROM busybox AS base\nRUN ln -s / /rootlink\nFROM busybox\nRUN --mount=from=base,source=/rootlink{},target=/m cat /m/host-only\n",
        host.display()
    );
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    build_fails(&env, &ctx, &[], "not found in base");
    assert!(!err(&build(&env, &ctx, &[])).contains("HOST"));
    // A Dockerfile that is not UTF-8 is refused (converted, it would name other files).
    std::fs::write(ctx.join("Dockerfile"), b"FROM busybox\nCOPY a\xff /b\n").unwrap();
    build_fails(&env, &ctx, &[], "failed to read dockerfile: not UTF-8 text");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    // A --secret flag that names nothing is refused before the build.
    build_fails(&env, &ctx, &["--secret", "id=x,src=/nonexistent/file"], "is not a readable file");
    build_fails(&env, &ctx, &["--secret", "src=/etc/hostname"], "an id is required");
    assert_eq!(env.count("build-mounts"), 0);
    assert_clean(&env);
}

/// RUN --security=insecure runs privileged only with `--allow security.insecure`, as
/// BuildKit's entitlement; sandbox is the default.
#[test]
fn run_security_insecure_needs_the_entitlement() {
    let env = Env::new("build-insecure");
    load_busybox(&env);
    let try_mount = "mkdir -p /mnt2 && mount -t tmpfs t /mnt2 && umount /mnt2 && echo";
    let df = format!(
        "FROM busybox\nRUN --security=sandbox {try_mount} sandbox > /r1 || echo refused > /r1\nRUN --security=insecure {try_mount} insecure > /r2\n"
    );
    let ctx = context(&env, "ctx", &[("Dockerfile", &df)]);
    build_fails(
        &env,
        &ctx,
        &[],
        "Dockerfile:3: RUN: --security=insecure: security.insecure is not allowed (grant it with --allow security.insecure)",
    );
    build_ok(&env, &ctx, &["--allow", "security.insecure", "-t", "ins"]);
    assert_eq!(env.ok(&["run", "--rm", "ins", "cat", "/r1", "/r2"]), "refused\ninsecure\n");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN --security=root true\n").unwrap();
    build_fails(&env, &ctx, &["--allow", "security.insecure"], "--security=root: want sandbox or insecure");
    build_fails(&env, &ctx, &["--allow", "everything"], "--allow everything: unknown entitlement");
    assert_clean(&env);
}

/// COPY --parents (Dockerfile 1.20): sources keep their paths in the destination, or what
/// follows a `/./` pivot; a directory keeps its own name too.
#[test]
fn copy_parents_keeps_the_source_paths() {
    let env = Env::new("build-parents");
    load_busybox(&env);
    let df = "FROM busybox\n\
        COPY --parents src/*/*.go /out/\n\
        COPY --parents ./src/./b/*.txt /piv/\n\
        COPY --parents src/a /dirs\n\
        COPY --parents lib/libfoo.so /sym/\n\
        RUN find /out /piv /dirs /sym -type f | sort > /list\n";
    let ctx = context(
        &env,
        "ctx",
        &[("Dockerfile", df), ("src/a/x.go", "x"), ("src/b/y.go", "y"), ("src/b/z.txt", "z"), ("top.go", "t"), ("lib/libfoo.so.1", "so")],
    );
    // A symlinked source keeps the path it was named by, not its target's.
    std::os::unix::fs::symlink("libfoo.so.1", ctx.join("lib/libfoo.so")).unwrap();
    build_ok(&env, &ctx, &["-t", "par"]);
    assert_eq!(
        env.ok(&["run", "--rm", "par", "cat", "/list"]),
        "/dirs/src/a/x.go\n/out/src/a/x.go\n/out/src/b/y.go\n/piv/b/z.txt\n/sym/lib/libfoo.so\n"
    );
    assert_clean(&env);
}

/// A build that must end within two minutes (a deadlock fails it instead of hanging CI).
fn build_within(env: &Env, ctx: &Path, args: &[&str]) -> (bool, String) {
    let log = env.dir.join("within.log");
    let mut c = build_command(env, ctx, args);
    let mut child = c.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.success(), std::fs::read_to_string(&log).unwrap());
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the build hung:\n{}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// RUN --mount against a hostile stage and the cache's keys:
/// - a bind of a stage's path whose name is not UTF-8, beside a symlink to the host named as
///   its lossy conversion: the RUN sees the stage's directory, never the host's;
/// - two mounts of one cache id in one RUN share it (and do not wait for each other);
/// - a cache mount filled from a stage is another cache once the stage changes;
/// - a mount point through the image's symlink is not left in the layer.
#[test]
fn run_mounts_hostile_stage_and_cache_keys() {
    let env = Env::new("build-mounts-hostile");
    load_busybox(&env);
    let host = env.dir.join("hostdir");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("host-only"), "HOST\n").unwrap();
    let df = format!(
        "FROM busybox AS prep\n\
         RUN mkdir \"/x$(printf '\\377')\" && ln -s {h} \"/x$(printf '\\357\\277\\275')\" && ln -s \"/x$(printf '\\377')\" /s\n\
         FROM busybox\n\
         RUN --mount=from=prep,source=/s,target=/m,rw ls -A /m > /listing && echo PWNED > /m/pwned\n\
         RUN --mount=type=cache,id=dl,target=/a,sharing=locked --mount=type=cache,id=dl,target=/b,sharing=locked sh -c 'echo hi > /a/f && cat /b/f > /same'\n\
         RUN ln -s /nonexist/dir /evil\n\
         RUN --mount=type=tmpfs,target=/evil/x touch /evil/x/y\n",
        h = host.display()
    );
    let ctx = context(&env, "ctx", &[("Dockerfile", &df)]);
    let (ok, log) = build_within(&env, &ctx, &["-t", "h:1"]);
    assert!(ok, "{log}");
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1, "the RUN wrote to the host");
    assert_eq!(env.ok(&["run", "--rm", "h:1", "cat", "/listing", "/same"]), "hi\n", "the stage's empty directory, one cache");
    let o = env.ctl(&["run", "--rm", "h:1", "ls", "/nonexist"]);
    assert!(!o.status.success(), "a mount point through /evil was left in the layer: {}", out(&o));
    // A cache filled from a stage: the stage's change is a new cache (and a new key).
    let df = |v: &str| {
        format!("FROM busybox AS st\nRUN mkdir /d && echo {v} > /d/f\nFROM busybox\nRUN --mount=type=cache,id=fixed,target=/c,from=st,source=/d cat /c/f > /got\n")
    };
    std::fs::write(ctx.join("Dockerfile"), df("v1")).unwrap();
    build_ok(&env, &ctx, &["-t", "cf:1"]);
    std::fs::write(ctx.join("Dockerfile"), df("v2")).unwrap();
    build_ok(&env, &ctx, &["-t", "cf:2"]);
    assert_eq!(env.ok(&["run", "--rm", "cf:2", "cat", "/got"]), "v2\n");
    // A stage named by from= must come before; two mounts at one place are refused.
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox AS a\nRUN --mount=from=b,target=/m true\nFROM busybox AS b\n").unwrap();
    build_fails(&env, &ctx, &[], "--from=b: stage \"b\" is not defined before this one");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/t true\n").unwrap();
    build_fails(&env, &ctx, &[], "target /t is given by another mount");
    // Options with variables are checked once substituted (not refused at parse time).
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nARG UID=1000\nRUN --mount=type=cache,id=u,target=/cu,uid=$UID stat -c %u /cu > /owner\n",
    )
    .unwrap();
    build_ok(&env, &ctx, &["-t", "uid"]);
    assert_eq!(env.ok(&["run", "--rm", "uid", "cat", "/owner"]), "1000\n");
    // A failing RUN with an env= secret leaves nothing (its bundle's tmpfs included).
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN --mount=type=secret,id=t,env=T false\n").unwrap();
    let o = build_command(&env, &ctx, &["--secret", "id=t,env=CAPSA_TEST_SECRET"]).env("CAPSA_TEST_SECRET", "hush").output().unwrap();
    assert!(!o.status.success() && err(&o).contains("exit code: 1"), "{}", err(&o));
    // A RUN plants symlinks to the host in a cache mount: the next RUN, `system df`'s walk
    // and the prune leave the host's files alone.
    let df = format!(
        "FROM busybox\nRUN --mount=type=cache,id=trap,target=/c ln -s {h} /c/host && ln -s / /c/root && mkdir /c/d && ln -s {h}/host-only /c/d/f\nRUN --mount=type=cache,id=trap,target=/c ls /c > /seen\n",
        h = host.display()
    );
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    build_ok(&env, &ctx, &["-t", "trap"]);
    assert_eq!(env.ok(&["run", "--rm", "trap", "cat", "/seen"]), "d\nhost\nroot\n");
    env.ok(&["system", "df"]);
    env.ok(&["builder", "prune", "-a", "-f"]);
    assert_eq!(std::fs::read_to_string(host.join("host-only")).unwrap(), "HOST\n", "the prune followed a symlink to the host");
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1);
    assert_eq!(env.count("build-mounts"), 0);
    env.ok(&["rmi", "trap"]);
    assert_clean(&env);
}

/// Globs as docker 20.10's BuildKit copies them (checked side by side): one match is copied
/// as that source alone would be (a file to a file, a directory's contents); several make
/// the destination a directory; two source words need a destination ending in `/`.
#[test]
fn copy_globs_match_buildkit() {
    let env = Env::new("build-globs");
    load_busybox(&env);
    let df = "FROM busybox\nCOPY d/x* /one\nCOPY d/su* /two\nCOPY d/* /three\nRUN ls -R /one /two /three > /out\n";
    let ctx = context(&env, "ctx", &[("Dockerfile", df), ("d/x1", "one\n"), ("d/sub/f", "s\n")]);
    build_ok(&env, &ctx, &["-t", "globs"]);
    assert_eq!(env.ok(&["run", "--rm", "globs", "cat", "/out"]), "/one\n\n/three:\nf\nx1\n\n/two:\nf\n");
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY d/x1 d/sub /four\n").unwrap();
    build_fails(&env, &ctx, &[], "When using COPY with more than one source file, the destination must be a directory and end with a /");
    assert_clean(&env);
}
