use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print the container's stats once and exit.
    #[arg(long)]
    pub stats: bool,
    /// Time between stats events (Go duration: 5s, 500ms, 1m).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    pub id: String,
}

fn line(e: &capsa::container::events::Event) -> Result<()> {
    let s = serde_json::to_string(e).map_err(|e| capsa::Error::new(format!("encode event: {e}")))?;
    super::out(&format!("{s}\n"));
    Ok(())
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    use capsa::container::events;
    let interval = events::parse_duration(&a.interval).map_err(|e| e.context("--interval"))?;
    if a.stats {
        line(&events::stats(&cli.root, &a.id)?)?;
        return Ok(0);
    }
    events::watch(
        &cli.root,
        &a.id,
        interval,
        &mut |e| {
            let _ = line(e);
        },
        &mut |w| crate::log::warn(w),
    )?;
    Ok(0)
}
