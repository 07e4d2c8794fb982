//! Kubernetes' view: containerd's CRI plugin (the Debian package, 1.6.20) driven through the CRI
//! v1 API, the way kubelet drives it, with capsa registered as a RuntimeClass handler of its own
//! runtime type (`io.containerd.capsa.v2`, settings in a file named by the generic runtime
//! options' `ConfigPath`: the configuration README documents for containerd 1.6).
//!
//! Every test starts its own containerd, inside a network namespace it makes (`unshare --net`,
//! loopback up): the CNI bridge and the pods' veths live there and nothing reaches the host's
//! network. CNI is Debian's `containernetworking-plugins` (bridge + host-local, loopback), with
//! IPAM state in the test's directory. Images are a busybox image built offline (umoci), imported
//! into the `k8s.io` namespace; its `pause` tag is the sandbox image. Streaming Exec/Attach go
//! over containerd's streaming server (127.0.0.1 in that namespace), as WebSocket
//! (`v4.channel.k8s.io`) from a thread that joined the namespace.
//!
//! Drop stops and removes every pod, stops containerd and checks that nothing is left: no shim,
//! no pod network namespace, no mount under the test's directory, no cgroup under the pods'
//! cgroup parent.

#![allow(clippy::unwrap_used)] // a failing unwrap is a failing test

use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use capsa_integration::*;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "docker.io/library/busybox-capsa:latest";
const PAUSE: &str = "docker.io/library/busybox-capsa:pause";
/// The RuntimeClass handler names registered in the test's containerd.
const CAPSA: &str = "capsa";
/// Namespace modes of the CRI API.
const POD: i32 = 0;
const CONTAINER: i32 = 1;
/// Container states.
const RUNNING: i32 = 1;
const EXITED: i32 = 2;

static SEQ: AtomicU32 = AtomicU32::new(0);

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// The shim under test: `$CAPSA_SHIM_BIN`, else the one of this test's cargo profile.
fn shim_bin() -> PathBuf {
    let p = match std::env::var_os("CAPSA_SHIM_BIN") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => profile_dir().join("containerd-shim-capsa-v2"),
    };
    assert!(p.is_file(), "{}: missing; build it: cargo build -p containerd-shim-capsa-v2", p.display());
    p.canonicalize().unwrap()
}

/// Kills and reaps a child on drop unless taken out.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A private containerd with its CRI plugin, in a network namespace of its own.
struct Cri {
    dir: PathBuf,
    child: Option<Child>,
    rt: tokio::runtime::Runtime,
    rs: RuntimeServiceClient<Channel>,
    is: ImageServiceClient<Channel>,
    /// Pod cgroups go under this parent (cgroupfs driver, relative to the hierarchy roots).
    cgroup_parent: String,
    /// Network namespaces of the pods started, to check they are gone at the end.
    netns: std::cell::RefCell<Vec<String>>,
}

impl Cri {
    fn start() -> Cri {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/ccri-{}-{n}-d", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(dir.join("cni")).unwrap();
        std::os::unix::fs::symlink(shim_bin(), bin.join("containerd-shim-capsa-v2")).unwrap();
        // capsa's settings, as the generic runtime options' ConfigPath names them (containerd 1.6
        // sends no ConfigBody).
        fs::write(
            dir.join("capsa.toml"),
            format!("BinaryName = \"{}\"\nRoot = \"{}\"\n", runtime_bin().display(), dir.join("capsa-root").display()),
        )
        .unwrap();
        let cni = format!(
            r#"{{"cniVersion": "0.4.0", "name": "capsa-cri-test", "plugins": [{{"type": "bridge", "bridge": "cri0", "isGateway": true, "ipMasq": false,
               "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "10.88.7.0/24"}}]], "dataDir": "{}"}}}}]}}"#,
            dir.join("ipam").display()
        );
        fs::write(dir.join("cni/10-capsa.conflist"), cni).unwrap();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "{d}/c.sock"
[ttrpc]
  address = "{d}/c.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{CAPSA}]
      runtime_type = "io.containerd.capsa.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{CAPSA}.options]
        TypeUrl = "io.containerd.capsa.v1.options"
        ConfigPath = "{d}/capsa.toml"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
    max_conf_num = 1
"#,
            d = dir.display()
        );
        fs::write(dir.join("config.toml"), config).unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "ip link set lo up && exec containerd --config \"$0\""])
            .arg(dir.join("config.toml"))
            .env("PATH", format!("{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", bin.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        // Killed if anything below fails, before the Cri (whose Drop stops it) exists.
        let mut guard = ChildGuard(Some(child));
        let sock = dir.join("c.sock");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let up = wait_until(POLL_TIMEOUT, || sock.exists());
        assert!(up, "containerd did not come up:\n{}", fs::read_to_string(dir.join("containerd.log")).unwrap_or_default());
        // The socket file appears before containerd listens on it: connect until it answers.
        let channel = poll(POLL_TIMEOUT, "containerd's CRI socket to accept connections", || {
            let path = sock.clone();
            rt.block_on(Endpoint::try_from("http://[::]:50051").unwrap().connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
            })))
            .ok()
        });
        let cri = Cri {
            cgroup_parent: format!("/ccri{}n{n}x", std::process::id()),
            dir,
            child: guard.0.take(),
            rt,
            rs: RuntimeServiceClient::new(channel.clone()),
            is: ImageServiceClient::new(channel),
            netns: Default::default(),
        };
        let ready = wait_until(POLL_TIMEOUT, || cri.rt.block_on(cri.rs.clone().version(VersionRequest::default())).is_ok());
        assert!(ready, "CRI not serving:\n{}", cri.log());
        let tar = busybox_image_tar(&cri.dir);
        let out = Cmd::new("ctr", &cri.dir)
            .arg("-a")
            .arg(cri.dir.join("c.sock"))
            .args(["-n", "k8s.io", "images", "import", "--base-name", "docker.io/library/busybox-capsa"])
            .arg(tar)
            .run();
        assert!(out.success(), "{out}");
        // The CRI plugin learns about imported images from containerd's events.
        for image in [IMAGE, PAUSE] {
            let known = wait_until(POLL_TIMEOUT, || {
                let req = ImageStatusRequest { image: Some(ImageSpec { image: image.into(), ..Default::default() }), verbose: false };
                cri.rt.block_on(cri.is.clone().image_status(req)).map(|r| r.into_inner().image.is_some()).unwrap_or(false)
            });
            assert!(known, "CRI does not see {image}");
        }
        cri
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn containerd_pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// One RuntimeService call, synchronously.
    fn call<T, F>(&self, f: impl FnOnce(RuntimeServiceClient<Channel>) -> F) -> Result<T, tonic::Status>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.rt.block_on(f(self.rs.clone())).map(|r| r.into_inner())
    }

    fn pod_config(&self, name: &str, pid_mode: i32) -> PodSandboxConfig {
        let uid = format!("uid-{name}-{}", SEQ.fetch_add(1, Ordering::Relaxed));
        let log_dir = self.dir.join("pods").join(&uid);
        fs::create_dir_all(&log_dir).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: name.into(), uid, namespace: "default".into(), attempt: 0 }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption { network: POD, pid: pid_mode, ipc: POD, ..Default::default() }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox with `handler`; returns the sandbox id.
    #[track_caller]
    fn run_pod(&self, config: &PodSandboxConfig, handler: &str) -> String {
        let req = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: handler.into() };
        let id =
            self.call(|mut c| async move { c.run_pod_sandbox(req).await }).unwrap_or_else(|e| panic!("{e}\n{}", self.log())).pod_sandbox_id;
        if let Some(ns) = self
            .pod_info(&id)
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(|n| n.as_array())
            .and_then(|ns| ns.iter().find(|n| n["type"] == "network").and_then(|n| n["path"].as_str()).map(str::to_string))
        {
            self.netns.borrow_mut().push(ns);
        }
        if handler == CAPSA {
            // Every capsa pod is served by our shim, never containerd's Go one.
            let (_, argv0, exe) = self.shim_of(&id);
            assert!(argv0.ends_with("containerd-shim-capsa-v2") && exe == shim_bin(), "pod {id} runs under {argv0} ({})", exe.display());
        }
        id
    }

    /// The verbose PodSandboxStatus info (containerd's JSON).
    fn pod_info(&self, id: &str) -> Value {
        let req = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true };
        let r = self.call(|mut c| async move { c.pod_sandbox_status(req).await }).unwrap();
        serde_json::from_str(r.info.get("info").map(String::as_str).unwrap_or("{}")).unwrap()
    }

    fn pod_status(&self, id: &str) -> PodSandboxStatus {
        let req = PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: false };
        self.call(|mut c| async move { c.pod_sandbox_status(req).await }).unwrap().status.unwrap()
    }

    fn container_config(name: &str, args: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
            image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
            command: args.iter().map(|a| a.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        }
    }

    /// CreateContainer + StartContainer; returns the container id.
    #[track_caller]
    fn start_container(&self, pod: &str, pod_config: &PodSandboxConfig, mut config: ContainerConfig) -> String {
        // As kubelet does: the container's namespace options are the pod's.
        let ns = pod_config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone());
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.security_context.get_or_insert_with(Default::default).namespace_options = ns;
        let req = CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(config), sandbox_config: Some(pod_config.clone()) };
        let id =
            self.call(|mut c| async move { c.create_container(req).await }).unwrap_or_else(|e| panic!("{e}\n{}", self.log())).container_id;
        let req = StartContainerRequest { container_id: id.clone() };
        self.call(|mut c| async move { c.start_container(req).await }).unwrap_or_else(|e| panic!("{e}\n{}", self.log()));
        id
    }

    fn status(&self, id: &str) -> ContainerStatus {
        let req = ContainerStatusRequest { container_id: id.into(), verbose: false };
        self.call(|mut c| async move { c.container_status(req).await }).unwrap().status.unwrap()
    }

    /// The verbose ContainerStatus info (containerd's JSON: pid, runtime spec, ...).
    fn container_info(&self, id: &str) -> Value {
        let req = ContainerStatusRequest { container_id: id.into(), verbose: true };
        let r = self.call(|mut c| async move { c.container_status(req).await }).unwrap();
        serde_json::from_str(r.info.get("info").map(String::as_str).unwrap_or("{}")).unwrap()
    }

    fn pid_of(&self, id: &str) -> i32 {
        self.container_info(id)["pid"].as_i64().unwrap() as i32
    }

    #[track_caller]
    fn wait_exited(&self, id: &str) -> ContainerStatus {
        poll(POLL_TIMEOUT, &format!("container {id} to exit"), || {
            let s = self.status(id);
            (s.state == EXITED).then_some(s)
        })
    }

    fn exec_sync(&self, id: &str, cmd: &[&str]) -> ExecSyncResponse {
        let req = ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|a| a.to_string()).collect(), timeout: 10 };
        self.call(|mut c| async move { c.exec_sync(req).await }).unwrap_or_else(|e| panic!("exec_sync {cmd:?}: {e}"))
    }

    /// Stop and remove every pod (containers first), as kubelet tears a pod down.
    fn remove_pod(&self, id: &str) {
        let req = StopPodSandboxRequest { pod_sandbox_id: id.into() };
        self.call(|mut c| async move { c.stop_pod_sandbox(req).await })
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {e}\n{}", self.log()));
        let req = RemovePodSandboxRequest { pod_sandbox_id: id.into() };
        self.call(|mut c| async move { c.remove_pod_sandbox(req).await })
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {e}\n{}", self.log()));
    }

    /// Live shim processes serving this containerd: (pid, argv[0], exe).
    fn shims(&self) -> Vec<(i32, String, PathBuf)> {
        let needle = format!("-address {}", self.sock().display());
        all_pids()
            .into_iter()
            .filter(|p| pid_alive(*p) && proc_cmdline(*p).contains(&needle))
            .map(|p| {
                let argv0 = proc_cmdline(p).split(' ').next().unwrap_or("").to_string();
                (p, argv0, fs::read_link(format!("/proc/{p}/exe")).unwrap_or_default())
            })
            .collect()
    }

    /// The shim serving pod `sandbox`: its serving process is started with `-id <sandbox id>`.
    #[track_caller]
    fn shim_of(&self, sandbox: &str) -> (i32, String, PathBuf) {
        let id = format!("-id {sandbox} ");
        let found: Vec<_> = self.shims().into_iter().filter(|(p, _, _)| proc_cmdline(*p).contains(&id)).collect();
        assert_eq!(found.len(), 1, "one shim for pod {sandbox}: {found:?}");
        found.into_iter().next().unwrap()
    }

    /// WebSocket client for a streaming URL (Exec/Attach), in containerd's network namespace.
    fn stream(&self, url: &str, stdin: &[u8], until_stdout: &str) -> Streamed {
        let ns = fs::File::open(format!("/proc/{}/ns/net", self.containerd_pid())).unwrap();
        let url = url.replacen("http://", "ws://", 1);
        let (stdin, until) = (stdin.to_vec(), until_stdout.to_string());
        std::thread::spawn(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            ws_session(&url, &stdin, &until)
        })
        .join()
        .unwrap()
    }
}

/// What a streaming session received, by channel.
#[derive(Debug, Default)]
struct Streamed {
    stdout: String,
    stderr: String,
    /// The v4 status message (JSON) of the error channel.
    status: String,
}

/// One `v4.channel.k8s.io` session: send `stdin` on channel 0 (again and again until stdout
/// shows `until`, if set: an attach may start listening late), read until the server closes.
fn ws_session(url: &str, stdin: &[u8], until: &str) -> Streamed {
    use tungstenite::client::IntoClientRequest;
    use tungstenite::Message;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
    let (mut ws, _) = tungstenite::connect(req).unwrap_or_else(|e| panic!("websocket {url}: {e}"));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    let mut got = Streamed::default();
    let deadline = Instant::now() + POLL_TIMEOUT;
    let mut sent_at: Option<Instant> = None;
    loop {
        assert!(Instant::now() < deadline, "streaming session {url} did not end: {got:?}");
        let resend = !stdin.is_empty() && (sent_at.is_none() || (!until.is_empty() && !got.stdout.contains(until)));
        if resend && sent_at.is_none_or(|t| t.elapsed() > Duration::from_millis(300)) {
            let mut frame = vec![0u8];
            frame.extend_from_slice(stdin);
            ws.send(Message::Binary(frame.into())).unwrap();
            sent_at = Some(Instant::now());
        }
        match ws.read() {
            Ok(Message::Binary(b)) if !b.is_empty() => {
                let text = String::from_utf8_lossy(&b[1..]).to_string();
                match b[0] {
                    1 => got.stdout.push_str(&text),
                    2 => got.stderr.push_str(&text),
                    3 => got.status.push_str(&text),
                    _ => {}
                }
                if !until.is_empty() && got.stdout.contains(until) && stdin.is_empty() {
                    return got;
                }
            }
            Ok(Message::Close(_)) => return got,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => return got,
            Err(tungstenite::Error::Protocol(_)) => return got,
            Err(e) => panic!("websocket {url}: {e} ({got:?})"),
        }
        if !until.is_empty() && got.stdout.contains(until) && !stdin.is_empty() && sent_at.is_some() {
            // Attach: what we wanted came back; leave (the container keeps running).
            let _ = ws.close(None);
            return got;
        }
    }
}

impl Drop for Cri {
    fn drop(&mut self) {
        let pods = self.call(|mut c| async move { c.list_pod_sandbox(ListPodSandboxRequest::default()).await }).map(|r| r.items);
        for p in pods.unwrap_or_default() {
            let req = StopPodSandboxRequest { pod_sandbox_id: p.id.clone() };
            let _ = self.call(|mut c| async move { c.stop_pod_sandbox(req).await });
            let req = RemovePodSandboxRequest { pod_sandbox_id: p.id.clone() };
            let _ = self.call(|mut c| async move { c.remove_pod_sandbox(req).await });
        }
        // Shims exit once their last task is deleted.
        wait_until(Duration::from_secs(5), || self.shims().is_empty());
        let shims = self.shims();
        for (p, _, _) in &shims {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
            let exited = wait_until(Duration::from_secs(10), || matches!(child.try_wait(), Ok(Some(_))));
            if !exited {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        let prefix = format!("{}/", self.dir.display());
        let mut mounts: Vec<String> = host_mount_points().into_iter().filter(|m| m.starts_with(&prefix)).collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in &mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let netns: Vec<String> = self.netns.borrow().iter().filter(|p| Path::new(p).exists()).cloned().collect();
        for p in &netns {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_file(p);
        }
        // The pods' cgroup parent is made by the runtime (kubelet would own it); the leaves must
        // be gone already.
        let parent = self.cgroup_parent.trim_start_matches('/').to_string();
        let leaves: Vec<PathBuf> = cgroup_dirs_for(&parent)
            .into_iter()
            .flat_map(|d| fs::read_dir(&d).into_iter().flatten().flatten().filter(|e| e.path().is_dir()).map(|e| e.path()))
            .collect();
        for d in cgroup_dirs_for(&parent) {
            let _ = fs::remove_dir(&d);
        }
        let procs = processes_for(&self.dir.display().to_string());
        let keep = std::thread::panicking() && std::env::var_os("CAPSA_IT_KEEP").is_some();
        if !keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
        if !std::thread::panicking() {
            assert!(shims.is_empty(), "shims still running after every pod was removed: {shims:?}");
            assert!(mounts.is_empty(), "mounts left under {}: {mounts:?}", self.dir.display());
            assert!(netns.is_empty(), "pod network namespaces left: {netns:?}");
            assert!(leaves.is_empty(), "cgroups left: {leaves:?}");
            assert!(procs.is_empty(), "processes left: {procs:?}");
        }
    }
}

/// CRI-format log lines (`TIME STREAM F|P TEXT`) of a container log, as (stream, text).
fn cri_log_lines(path: &Path) -> Vec<(String, String)> {
    read(path)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(4, ' ').collect();
            assert_eq!(f.len(), 4, "not a CRI log line: {l:?}");
            assert!(f[0].contains('T') && (f[0].ends_with('Z') || f[0].contains('+')), "time is not RFC 3339: {l:?}");
            assert!(f[2] == "F" || f[2] == "P", "tag is not F or P: {l:?}");
            (f[1].to_string(), f[3].to_string())
        })
        .collect()
}

/// A pod of two containers under capsa: both in one shim, which is capsa's
/// (`containerd-shim-capsa-v2`), ExecSync, Stop/Remove, and a clean teardown.
#[test]
fn pod_runs_under_capsa_shim() {
    let cri = Cri::start();
    let pc = cri.pod_config("web", CONTAINER);
    let pod = cri.run_pod(&pc, CAPSA);
    let st = cri.pod_status(&pod);
    assert_eq!(st.runtime_handler, CAPSA);
    let ip = st.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
    assert!(ip.starts_with("10.88.7."), "pod IP from the test's CNI bridge: {st:?}");
    let (shim, argv0, exe) = cri.shim_of(&pod);
    assert!(argv0.ends_with("containerd-shim-capsa-v2"), "pod {pod} runs under {argv0}");
    assert_eq!(exe, shim_bin(), "the shim process is not our binary");
    let info = cri.pod_info(&pod);
    assert_eq!(info["runtimeType"], "io.containerd.capsa.v2", "{info}");
    let c1 = cri.start_container(&pod, &pc, Cri::container_config("one", &["sleep", "1000"]));
    let c2 = cri.start_container(&pod, &pc, Cri::container_config("two", &["sh", "-c", "echo two-up; exec sleep 1000"]));
    for c in [&c1, &c2] {
        assert_eq!(cri.status(c).state, RUNNING);
        // Both inits are children of the pod's one shim (its subreaper).
        let ppid = status_field(&read(format!("/proc/{}/status", cri.pid_of(c))), "PPid").unwrap();
        assert_eq!(ppid.parse::<i32>().unwrap(), shim, "container {c} is not served by the pod's shim");
    }
    assert_eq!(cri.shims().len(), 1, "one shim per pod: {:?}", cri.shims());
    // The capsa binary ran them, with the Root from capsa.toml.
    assert!(cri.dir.join("capsa-root/k8s.io").join(&c1).is_dir(), "capsa's state for {c1}");
    // The pod's network: loopback and the bridge's address.
    let r = cri.exec_sync(&c1, &["cat", "/proc/net/fib_trie"]);
    assert!(String::from_utf8_lossy(&r.stdout).contains(&ip), "{r:?}");
    let r = cri.exec_sync(&c2, &["sh", "-c", "echo out-$((6*7)); echo err-line >&2; exit 3"]);
    assert_eq!((r.exit_code, String::from_utf8_lossy(&r.stdout).trim()), (3, "out-42"), "{r:?}");
    assert_eq!(String::from_utf8_lossy(&r.stderr).trim(), "err-line");
    // StopContainer: sleep is pid 1 and ignores TERM; SIGKILL after the grace period.
    let req = StopContainerRequest { container_id: c1.clone(), timeout: 1 };
    cri.call(|mut c| async move { c.stop_container(req).await }).unwrap();
    let s = cri.wait_exited(&c1);
    assert_eq!(s.exit_code, 137, "{s:?}");
    let req = RemoveContainerRequest { container_id: c1.clone() };
    cri.call(|mut c| async move { c.remove_container(req).await }).unwrap();
    assert!(!cri.dir.join("capsa-root/k8s.io").join(&c1).exists(), "capsa state of a removed container");
    let logs = cri_log_lines(&Path::new(&pc.log_directory).join("two.log"));
    assert_eq!(logs, vec![("stdout".to_string(), "two-up".to_string())]);
    cri.remove_pod(&pod);
    assert!(wait_until(POLL_TIMEOUT, || cri.shims().is_empty()), "the pod's shim did not exit: {:?}", cri.shims());
}

/// Exit codes, OOMKilled and CRI log files, as kubelet reads them from ContainerStatus.
#[test]
fn exit_codes_oom_and_logs() {
    let cri = Cri::start();
    let pc = cri.pod_config("jobs", CONTAINER);
    let pod = cri.run_pod(&pc, CAPSA);
    let c = cri.start_container(&pod, &pc, Cri::container_config("exit7", &["sh", "-c", "echo out-line; echo err-line >&2; exit 7"]));
    let s = cri.wait_exited(&c);
    assert_eq!((s.exit_code, s.reason.as_str()), (7, "Error"), "{s:?}");
    // (CRI stamps started_at after Start returns: a short process may finish before it.)
    assert!(s.started_at > 0 && s.finished_at > 0, "{s:?}");
    let mut logs = cri_log_lines(&Path::new(&pc.log_directory).join("exit7.log"));
    logs.sort();
    assert_eq!(logs, vec![("stderr".into(), "err-line".into()), ("stdout".into(), "out-line".into())]);
    let c = cri.start_container(&pod, &pc, Cri::container_config("ok", &["true"]));
    let s = cri.wait_exited(&c);
    assert_eq!((s.exit_code, s.reason.as_str()), (0, "Completed"), "{s:?}");
    // dd's 64 MiB buffer in a 16 MiB cgroup (no swap on this host).
    let mut cfg = Cri::container_config("oom", &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"]);
    cfg.linux = Some(LinuxContainerConfig {
        resources: Some(LinuxContainerResources { memory_limit_in_bytes: 16 << 20, ..Default::default() }),
        ..Default::default()
    });
    let c = cri.start_container(&pod, &pc, cfg);
    let s = cri.wait_exited(&c);
    assert_eq!((s.exit_code, s.reason.as_str()), (137, "OOMKilled"), "{s:?}");
    cri.remove_pod(&pod);
}

/// Streaming Exec (stdin in, stdout and the exit status back) and Attach.
#[test]
fn streaming_exec_and_attach() {
    let cri = Cri::start();
    let pc = cri.pod_config("stream", CONTAINER);
    let pod = cri.run_pod(&pc, CAPSA);
    let mut cfg = Cri::container_config("cat", &["cat"]);
    cfg.stdin = true;
    let c = cri.start_container(&pod, &pc, cfg);
    let req = ExecRequest {
        container_id: c.clone(),
        cmd: ["sh", "-c", "read x; echo got-$x; echo to-err >&2; exit 4"].map(String::from).to_vec(),
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = cri.call(|mut cl| async move { cl.exec(req).await }).unwrap().url;
    let got = cri.stream(&url, b"hello\n", "");
    assert_eq!(got.stdout, "got-hello\n", "{got:?}");
    assert_eq!(got.stderr, "to-err\n", "{got:?}");
    assert!(got.status.contains("NonZeroExitCode") && got.status.contains("\"message\":\"4\""), "{got:?}");
    let req = AttachRequest { container_id: c.clone(), stdin: true, stdout: true, stderr: false, tty: false };
    let url = cri.call(|mut cl| async move { cl.attach(req).await }).unwrap().url;
    let got = cri.stream(&url, b"ping\n", "ping");
    assert!(got.stdout.contains("ping\n"), "{got:?}");
    // The attach left; cat still has its stdin (only CloseIO ends it).
    assert_eq!(cri.status(&c).state, RUNNING);
    let req = AttachRequest { container_id: c.clone(), stdin: true, stdout: true, stderr: false, tty: false };
    let url = cri.call(|mut cl| async move { cl.attach(req).await }).unwrap().url;
    let got = cri.stream(&url, b"again\n", "again");
    assert!(got.stdout.contains("again\n"), "{got:?}");
    cri.remove_pod(&pod);
}

/// UpdateContainerResources reaches the cgroup; ContainerStats and ListContainerStats report it.
#[test]
fn update_resources_and_stats() {
    let cri = Cri::start();
    let pc = cri.pod_config("stats", CONTAINER);
    let pod = cri.run_pod(&pc, CAPSA);
    let c1 = cri.start_container(&pod, &pc, Cri::container_config("busy", &["sh", "-c", "while :; do :; done"]));
    let c2 = cri.start_container(&pod, &pc, Cri::container_config("idle", &["sleep", "1000"]));
    let limit = cgroup_dir_of(cri.pid_of(&c1), "memory").unwrap().join("memory.limit_in_bytes");
    let req = UpdateContainerResourcesRequest {
        container_id: c1.clone(),
        linux: Some(LinuxContainerResources { memory_limit_in_bytes: 64 << 20, cpu_shares: 512, ..Default::default() }),
        ..Default::default()
    };
    cri.call(|mut c| async move { c.update_container_resources(req).await }).unwrap_or_else(|e| panic!("{e}\n{}", cri.log()));
    assert_eq!(read(&limit).trim(), (64u64 << 20).to_string());
    let stats = poll(POLL_TIMEOUT, "cpu usage of the busy container", || {
        let req = ContainerStatsRequest { container_id: c1.clone() };
        let s = cri.call(|mut c| async move { c.container_stats(req).await }).unwrap().stats.unwrap();
        let cpu = s.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds.as_ref()).map(|v| v.value).unwrap_or(0);
        (cpu > 0).then_some(s)
    });
    let mem = stats.memory.as_ref().unwrap();
    assert!(mem.working_set_bytes.as_ref().map(|v| v.value).unwrap_or(0) > 0, "{stats:?}");
    assert_eq!(stats.attributes.as_ref().unwrap().id, c1);
    let req = ListContainerStatsRequest { filter: Some(ContainerStatsFilter { pod_sandbox_id: pod.clone(), ..Default::default() }) };
    let all = cri.call(|mut c| async move { c.list_container_stats(req).await }).unwrap().stats;
    let mut ids: Vec<String> = all.iter().filter_map(|s| s.attributes.as_ref().map(|a| a.id.clone())).collect();
    ids.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(ids, want);
    cri.remove_pod(&pod);
}

/// A pod with one PID namespace: every container sees the sandbox's init as pid 1 and the other
/// containers' processes; a container's background children die with it (the shim's `kill
/// --all` when an init without its own pid namespace exits); StopPodSandbox never fails on an
/// exited container (kill of a finished process is NotFound).
#[test]
fn shared_pid_namespace() {
    let cri = Cri::start();
    let pc = cri.pod_config("shared", POD);
    let pod = cri.run_pod(&pc, CAPSA);
    let c1 = cri.start_container(&pod, &pc, Cri::container_config("sleeper", &["sleep", "1000"]));
    let c2 = cri.start_container(&pod, &pc, Cri::container_config("looker", &["sleep", "1001"]));
    let r = cri.exec_sync(&c2, &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; ps -o args"]);
    let out = String::from_utf8_lossy(&r.stdout).to_string();
    assert!(out.lines().next().unwrap_or("").contains("trap"), "pid 1 is the sandbox's init:\n{out}");
    assert!(out.contains("sleep 1000") && out.contains("sleep 1001"), "{out}");
    // An init that leaves a child behind: the child goes when it exits.
    let c3 = cri.start_container(&pod, &pc, Cri::container_config("leaver", &["sh", "-c", "sleep 1002 & echo $! > /tmp/bg; exit 0"]));
    let s = cri.wait_exited(&c3);
    assert_eq!(s.exit_code, 0);
    let gone =
        wait_until(POLL_TIMEOUT, || !String::from_utf8_lossy(&cri.exec_sync(&c2, &["ps", "-o", "args"]).stdout).contains("sleep 1002"));
    assert!(gone, "the exited container's background child lives on");
    // StopContainer on the exited one, then StopPodSandbox with it exited: no error.
    let req = StopContainerRequest { container_id: c3.clone(), timeout: 1 };
    cri.call(|mut c| async move { c.stop_container(req).await }).unwrap();
    assert_eq!(cri.status(&c1).state, RUNNING);
    cri.remove_pod(&pod);
}

/// The same pod under containerd's Go shim and runc (the default handler here), for reference:
/// the test's setup works with the stock runtime, and that pod is not served by our shim.
#[test]
fn reference_pod_under_runc() {
    let cri = Cri::start();
    let pc = cri.pod_config("ref", CONTAINER);
    let pod = cri.run_pod(&pc, "runc");
    let (_, argv0, _) = cri.shim_of(&pod);
    assert!(argv0.ends_with("containerd-shim-runc-v2"), "{argv0}");
    let c = cri.start_container(&pod, &pc, Cri::container_config("one", &["sleep", "1000"]));
    let r = cri.exec_sync(&c, &["sh", "-c", "exit 3"]);
    assert_eq!(r.exit_code, 3);
    cri.remove_pod(&pod);
}
