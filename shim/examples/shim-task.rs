//! shim-task: call one Task API method on a running shim, for tests and debugging where `ctr`
//! has no command (ctr 1.6 has no `task update`).
//!
//! shim-task SOCKET update ID < resources.json      (OCI LinuxResources JSON on stdin)
//! shim-task SOCKET stats ID                        (prints the Any's type URL and size)

use std::io::Read;

use containerd_shim_protos::api::{StatsRequest, UpdateTaskRequest};
use containerd_shim_protos::{Client, TaskClient};
use protobuf::well_known_types::any::Any;
use ttrpc::context;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: shim-task SOCKET update|stats ID");
        std::process::exit(2);
    }
    let sock = args[1].strip_prefix("unix://").unwrap_or(&args[1]);
    let client = match Client::connect(&format!("unix://{sock}")) {
        Ok(c) => TaskClient::new(c),
        Err(e) => {
            eprintln!("connect {sock}: {e}");
            std::process::exit(1);
        }
    };
    let ctx = context::with_timeout(10_000_000_000);
    let r = match args[2].as_str() {
        "update" => {
            let mut data = Vec::new();
            if let Err(e) = std::io::stdin().read_to_end(&mut data) {
                eprintln!("stdin: {e}");
                std::process::exit(1);
            }
            let any = Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                value: data,
                ..Default::default()
            };
            let req = UpdateTaskRequest { id: args[3].clone(), resources: Some(any).into(), ..Default::default() };
            client.update(ctx, &req).map(|_| ())
        }
        "stats" => {
            let req = StatsRequest { id: args[3].clone(), ..Default::default() };
            client.stats(ctx, &req).map(|r| {
                let s = r.stats.as_ref().map(|a| (a.type_url.clone(), a.value.len())).unwrap_or_default();
                println!("{} {}", s.0, s.1);
            })
        }
        other => {
            eprintln!("unknown method {other}");
            std::process::exit(2);
        }
    };
    if let Err(e) = r {
        eprintln!("{}: {e}", args[2]);
        std::process::exit(1);
    }
}
