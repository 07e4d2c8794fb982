use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Kill the container first if it is still running.
    #[arg(short = 'f', long)]
    pub force: bool,
    pub id: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    match capsa::container::delete(&cli.root, &a.id, a.force) {
        // runc: `delete --force` of a container that does not exist succeeds.
        Err(e) if a.force && e.is_not_exist() => Ok(0),
        Err(e) => Err(e),
        Ok(warnings) => {
            for w in warnings {
                crate::log::warn(&w);
            }
            log::debug!("container {} deleted", a.id);
            Ok(0)
        }
    }
}
