use capsa::container::Container;
use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub id: String,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let state = Container::peek(&cli.root, &a.id)?;
    let status = capsa::container::status_of(&state, &cli.root.join(&a.id));
    // runc prints the owner empty here (and filled in `list`), and no trailing newline.
    let out =
        serde_json::to_string_pretty(&state.oci(status, String::new())).map_err(|e| capsa::Error::new(format!("encode state: {e}")))?;
    super::out(&out);
    Ok(0)
}
