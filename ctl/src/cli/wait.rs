//! `wait CONTAINER...`: block until each container stops, then print its exit code.

use super::{each, fail, Cli, Result};
use crate::container;
use crate::monitor::{client, proto};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let mut store = cli.store()?;
    each(&a.containers, |name| {
        let rec = container::find(&store, name)?;
        let rec =
            container::reconcile::one(&mut store, &cli.state_root, &rec)?.ok_or_else(|| fail(format!("No such container: {name}")))?;
        if !rec.is_active() {
            println!("{}", rec.exit_code);
            return Ok(());
        }
        let dir = container::dir(&store, &rec.id);
        let code = match client::connect(&dir) {
            Ok(s) => {
                use std::os::fd::AsFd;
                proto::send(s.as_fd(), "wait", &[])?;
                loop {
                    match proto::recv(s.as_fd())? {
                        Some((m, _)) if m.starts_with("exit ") => break m[5..].trim().parse::<i32>().ok(),
                        Some(_) => continue,
                        None => break None,
                    }
                }
            }
            Err(_) => None,
        };
        let code = match code {
            Some(c) => c,
            None => {
                // No monitor to ask (gone, or the container was --rm): what was recorded.
                match container::get(&store, &rec.id)? {
                    Some(r) => {
                        let r = container::reconcile::one(&mut store, &cli.state_root, &r)?.unwrap_or(r);
                        r.exit_code
                    }
                    None => rec.exit_code,
                }
            }
        };
        println!("{code}");
        Ok(())
    })
}
