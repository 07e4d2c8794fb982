//! `capsa -h`, `capsa help [COMMAND]`, `capsa COMMAND -h`: help in runc's layout (urfave/cli's
//! templates: NAME / USAGE / VERSION / COMMANDS / GLOBAL OPTIONS, and NAME / USAGE /
//! DESCRIPTION / OPTIONS for a command), built from the clap definitions so the two never
//! disagree. Flags read `--name value, -n value<TAB>usage (default: "x")` as urfave prints them.

use clap::{Arg, Command};

/// What runc puts in a command's USAGE line after the flags, and its description.
fn usage_of(name: &str) -> (&'static str, &'static str) {
    const ID: &str = "<container-id>\n\nWhere \"<container-id>\" is your name for the instance of the container.";
    match name {
        "create" => (
            "<container-id>\n\nWhere \"<container-id>\" is your name for the instance of the container that you\n\
             are starting. The name you provide for the container instance must be unique on\nyour host.",
            "The create command creates an instance of a container for a bundle. The bundle\n\
             is a directory with a specification file named \"config.json\" and a root\n\
             filesystem. The container's process waits until `capsa start` runs it.",
        ),
        "run" => (
            "<container-id>\n\nWhere \"<container-id>\" is your name for the instance of the container that you\n\
             are starting. The name you provide for the container instance must be unique on\nyour host.",
            "The run command creates an instance of a container for a bundle and starts it;\n\
             without --detach it waits for the container and exits with its exit code.",
        ),
        "exec" => (
            "<container-id> <command> [command options]  || -p process.json <container-id>\n\n\
             Where \"<container-id>\" is the name for the instance of the container and\n\
             \"<command>\" is the command to be executed in the container.\n\
             \"<command>\" can't be empty unless a \"-p\" flag provided.",
            "",
        ),
        "kill" => (
            "<container-id> [signal]\n\nWhere \"<container-id>\" is the name for the instance of the container and\n\
             \"[signal]\" is the signal to be sent to the init process.",
            "",
        ),
        "ps" => ("<container-id> [ps options]", ""),
        "spec" => ("", "The spec command writes an example config.json (like runc's) into the bundle directory."),
        "list" | "features" => ("", ""),
        "update" => ("<container-id>", "The update command changes the resource limits of a running container."),
        "events" => ("<container-id>", "The events command prints resource usage statistics and OOM notifications."),
        _ => (ID, ""),
    }
}

/// The text after `NAME:` (runc's long Usage paragraph).
const ABOUT: &str = "an OCI container runtime, runc-compatible

capsa runs containers packaged in the Open Container Initiative (OCI) bundle format
and takes runc's command line, so the tools that drive runc (containerd, podman,
Kubernetes through CRI) drive capsa unchanged.

A bundle is a directory holding a configuration file named \"config.json\" and a root
filesystem. To run a container from one:

    # capsa run [ -b bundle ] <container-id>

\"<container-id>\" is your name for this instance of the container; it must be unique
on the host. Without \"-b\" the bundle is the current directory.";

/// urfave/cli pads the columns with Go's tabwriter (minwidth 1, padding 2).
fn table(rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0) + 2;
    rows.iter().map(|(l, r)| format!("   {l:<width$}{r}").trim_end().to_string() + "\n").collect()
}

fn usage(a: &Arg) -> String {
    let text = a.get_help().map(|h| h.to_string()).unwrap_or_default();
    text.trim_end_matches('.').to_string()
}

/// A flag takes no value when it is a switch (`--tty`) or only accepts `--debug=false`.
fn is_switch(a: &Arg) -> bool {
    !a.get_action().takes_values() || a.get_num_args().is_some_and(|n| n.min_values() == 0)
}

fn flag_row(a: &Arg) -> (String, String) {
    let value = if is_switch(a) { "" } else { " value" };
    let mut names = Vec::new();
    if let Some(l) = a.get_long() {
        names.push(format!("--{l}{value}"));
    }
    if let Some(s) = a.get_short() {
        names.push(format!("-{s}{value}"));
    }
    let mut text = usage(a);
    if !is_switch(a) {
        if let Some(d) = a.get_default_values().first().and_then(|d| d.to_str()) {
            if d.parse::<i64>().is_ok() {
                text.push_str(&format!(" (default: {d})"));
            } else if !d.is_empty() {
                text.push_str(&format!(" (default: \"{d}\")"));
            }
        }
    }
    (names.join(", "), text)
}

fn flags(cmd: &Command, global: bool) -> Vec<(String, String)> {
    cmd.get_arguments()
        .filter(|a| !a.is_positional() && !a.is_hide_set() && a.is_global_set() == global)
        .filter(|a| global || a.get_long() != Some("version"))
        .map(flag_row)
        .collect()
}

/// `capsa -h` / `capsa help`.
pub fn main(root: &Command) -> String {
    let mut s = format!("NAME:\n   capsa - {ABOUT}\n\n");
    s.push_str("USAGE:\n   capsa [global options] command [command options] [arguments...]\n\n");
    s.push_str(&format!("VERSION:\n   {}\n{}\n", env!("CARGO_PKG_VERSION"), super::build_info::get().lines()));
    s.push_str("COMMANDS:\n");
    let mut rows: Vec<(String, String)> = root
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| (c.get_name_and_visible_aliases().join(", "), c.get_about().map(|a| a.to_string()).unwrap_or_default()))
        .map(|(n, a)| (n, a.trim_end_matches('.').to_string()))
        .collect();
    rows.push(("help, h".into(), "Shows a list of commands or help for one command".into()));
    s.push_str(&table(&rows));
    s.push_str("\nGLOBAL OPTIONS:\n");
    let mut rows = flags(root, true);
    // `--rootless` and `--version` are root-only in clap; runc lists them as global options.
    rows.extend(root.get_arguments().filter(|a| !a.is_global_set() && !a.is_hide_set() && !a.is_positional()).map(flag_row));
    rows.push(("--help, -h".into(), "show help".into()));
    s.push_str(&table(&rows));
    s
}

/// `capsa COMMAND -h` / `capsa help COMMAND`.
pub fn command(cmd: &Command) -> String {
    let name = cmd.get_name();
    let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
    let mut s = format!("NAME:\n   capsa {name} - {}\n\n", about.trim_end_matches('.'));
    let (args, description) = usage_of(name);
    let opts = flags(cmd, false);
    let flags_word = if opts.is_empty() { "" } else { " [command options]" };
    s.push_str(&format!("USAGE:\n   capsa {name}{flags_word} {args}\n").replace(" \n", "\n"));
    if !description.is_empty() {
        s.push_str(&format!("\nDESCRIPTION:\n   {}\n", description.replace('\n', "\n   ")));
    }
    if !opts.is_empty() {
        s.push_str("\nOPTIONS:\n");
        s.push_str(&table(&opts));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn runc_layout() {
        let root = super::super::full_command();
        let main = super::main(&root);
        for needle in ["NAME:\n   capsa - ", "\nUSAGE:\n   capsa [global options] command", "\nVERSION:\n   ", "\nspec: ", "\nCOMMANDS:\n"]
        {
            assert!(main.contains(needle), "{needle:?} in\n{main}");
        }
        assert!(main.contains("\n   --root value "), "{main}");
        assert!(main.contains("(default: \"/run/capsa\")"), "{main}");
        assert!(main.contains("\n   --debug "), "{main}");
        assert!(main.contains("\n   --version, -v "), "{main}");
        assert!(main.contains("\n   help, h "), "{main}");
        assert!(main.contains("\n   list, ls "), "{main}");
        let exec = super::command(root.find_subcommand("exec").unwrap());
        assert!(exec.starts_with("NAME:\n   capsa exec - "), "{exec}");
        assert!(exec.contains("USAGE:\n   capsa exec [command options] <container-id> <command>"), "{exec}");
        assert!(exec.contains("\n   --env value, -e value "), "{exec}");
        assert!(exec.contains("\n   --tty, -t "), "{exec}");
        assert!(exec.contains("(default: 0)"), "{exec}");
        assert!(!exec.contains("--root"), "global flags are not the command's: {exec}");
    }
}
