//! cri_bench: the CRI client of hack/bench-shim.sh (which starts containerd with its CRI plugin).
//!
//! ```text
//! cri_bench SOCKET HANDLER pod CONTAINERS   one pod of CONTAINERS sleeping containers; prints
//!                                           "rss_kb THREADS" of the pod's shim, then removes it
//! cri_bench SOCKET HANDLER start PODS       PODS pods at once, each RunPodSandbox + Create +
//!                                           Start of one container; prints "total_ms median_ms"
//!                                           (median per pod), then removes them
//! ```
//! Pods use the image `docker.io/library/busybox-bench:latest` (sandbox image: the CRI config's).

#![allow(clippy::unwrap_used)] // a benchmark tool: any failure ends the run

use std::path::PathBuf;
use std::time::Instant;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "docker.io/library/busybox-bench:latest";

fn pod_config(name: &str, log_dir: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "bench".into(), attempt: 0 }),
        hostname: name.into(),
        log_directory: format!("{log_dir}/{name}"),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: "/capsa-bench".into(),
            security_context: Some(LinuxSandboxSecurityContext { namespace_options: Some(namespaces()), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Kubelet's defaults: the pod's network and IPC namespaces, a pid namespace per container.
fn namespaces() -> NamespaceOption {
    NamespaceOption { network: 0, pid: 1, ipc: 0, ..Default::default() }
}

fn container_config(name: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata { name: name.into(), attempt: 0 }),
        image: Some(ImageSpec { image: IMAGE.into(), ..Default::default() }),
        command: vec!["sleep".into(), "100000".into()],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext { namespace_options: Some(namespaces()), ..Default::default() }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox and `n` containers created and started; returns the sandbox id.
async fn start_pod(mut c: RuntimeServiceClient<Channel>, name: String, handler: String, n: usize, log_dir: String) -> String {
    let pc = pod_config(&name, &log_dir);
    std::fs::create_dir_all(&pc.log_directory).unwrap();
    let req = RunPodSandboxRequest { config: Some(pc.clone()), runtime_handler: handler };
    let pod = c.run_pod_sandbox(req).await.unwrap().into_inner().pod_sandbox_id;
    for i in 0..n {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config(&format!("c{i}"))),
            sandbox_config: Some(pc.clone()),
        };
        let id = c.create_container(req).await.unwrap().into_inner().container_id;
        c.start_container(StartContainerRequest { container_id: id }).await.unwrap();
    }
    pod
}

async fn remove_pod(mut c: RuntimeServiceClient<Channel>, pod: String) {
    c.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    c.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod }).await.unwrap();
}

fn shim_of(sock: &str, pod: &str) -> i32 {
    let (needle_a, needle_id) = (format!("-address {sock}"), format!("-id {pod} "));
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(&needle_a) && cmd.contains(&needle_id) {
            return pid;
        }
    }
    panic!("no shim for pod {pod}");
}

fn status_kb(pid: i32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap())).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, sock, handler, mode, count] = &args[..] else {
        eprintln!("usage: cri_bench SOCKET HANDLER pod|start N");
        std::process::exit(2);
    };
    let n: usize = count.parse().unwrap();
    let log_dir = PathBuf::from(sock).parent().unwrap().join("bench-logs").display().to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let path = PathBuf::from(sock);
    let channel = rt
        .block_on(Endpoint::try_from("http://[::]:50051").unwrap().connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?)) }
        })))
        .unwrap();
    let client = RuntimeServiceClient::new(channel);
    match mode.as_str() {
        "pod" => {
            let pod = rt.block_on(start_pod(client.clone(), format!("rss-{handler}-{n}"), handler.clone(), n, log_dir));
            // Let the shim settle (idle workers retire after 10 s; both shims measured alike).
            std::thread::sleep(std::time::Duration::from_secs(12));
            let shim = shim_of(sock, &pod);
            println!("{} {}", status_kb(shim, "VmRSS:"), status_kb(shim, "Threads:"));
            rt.block_on(remove_pod(client, pod));
        }
        "start" => {
            let t0 = Instant::now();
            let pods: Vec<(String, f64)> = rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..n {
                    let (c, h, l) = (client.clone(), handler.clone(), log_dir.clone());
                    set.spawn(async move {
                        let t = Instant::now();
                        let pod = start_pod(c, format!("start-{h}-{i}"), h, 1, l).await;
                        (pod, t.elapsed().as_secs_f64() * 1000.0)
                    });
                }
                let mut out = Vec::new();
                while let Some(r) = set.join_next().await {
                    out.push(r.unwrap());
                }
                out
            });
            let total = t0.elapsed().as_secs_f64() * 1000.0;
            let mut times: Vec<f64> = pods.iter().map(|p| p.1).collect();
            times.sort_by(|a, b| a.total_cmp(b));
            println!("{total:.0} {:.0}", times[times.len() / 2]);
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for (pod, _) in pods {
                    set.spawn(remove_pod(client.clone(), pod));
                }
                while set.join_next().await.is_some() {}
            });
        }
        other => panic!("mode {other:?}: want pod or start"),
    }
}
