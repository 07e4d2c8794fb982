use capsa::Result;

use super::Cli;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format: table (ps(1) lines) or json (array of pids).
    #[arg(short = 'f', long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    pub id: String,
    /// Arguments for ps(1) (default -ef), after `--`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(cli: &Cli, a: &Args) -> Result<i32> {
    let pids = capsa::container::ps::pids(&cli.root, &a.id)?;
    if a.format == "json" {
        // Go's json.Encoder: compact, newline-terminated; runc's empty (nil) list is `null`.
        let s = if pids.is_empty() {
            "null".to_string()
        } else {
            serde_json::to_string(&pids).map_err(|e| capsa::Error::new(format!("encode pids: {e}")))?
        };
        super::out(&format!("{s}\n"));
    } else {
        super::out(&capsa::container::ps::table(&pids, &a.ps_args)?);
    }
    Ok(0)
}
