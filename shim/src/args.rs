//! The shim's command line, as containerd writes it: Go `flag` syntax (`-name value`,
//! `-name=value`, `--name`, bool flags bare or `=true|false`), flags first, then the action
//! (`start`, `delete`, or none to serve).

use std::ffi::OsString;

#[derive(Debug, Default, PartialEq)]
pub struct Flags {
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    pub namespace: String,
    pub id: String,
    pub socket: String,
    pub bundle: String,
    pub address: String,
    pub publish_binary: String,
    /// The first argument after the flags.
    pub action: String,
}

pub fn parse(args: &[OsString]) -> Result<Flags, String> {
    let mut f = Flags::default();
    let mut args = args.iter().map(|a| a.to_str().ok_or_else(|| format!("argument {a:?} is not UTF-8")));
    while let Some(arg) = args.next() {
        let arg = arg?;
        if arg == "--" {
            f.action = args.next().transpose()?.unwrap_or_default().to_string();
            break;
        }
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')).filter(|s| !s.is_empty()) else {
            f.action = arg.to_string();
            break;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        let boolean = match name {
            "debug" => Some(&mut f.debug),
            "v" | "version" => Some(&mut f.version),
            "info" => Some(&mut f.info),
            _ => None,
        };
        if let Some(b) = boolean {
            *b = match inline {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                Some(v) => return Err(format!("invalid boolean value {v:?} for -{name}")),
            };
            continue;
        }
        let slot = match name {
            "namespace" => &mut f.namespace,
            "id" => &mut f.id,
            "socket" => &mut f.socket,
            "bundle" => &mut f.bundle,
            "address" => &mut f.address,
            "publish-binary" => &mut f.publish_binary,
            _ => return Err(format!("flag provided but not defined: -{name}")),
        };
        *slot = match inline {
            Some(v) => v.to_string(),
            None => args.next().transpose()?.ok_or_else(|| format!("flag needs an argument: -{name}"))?.to_string(),
        };
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &[&str]) -> Result<Flags, String> {
        parse(&a.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn containerd_start_line() {
        let f = p(&[
            "-namespace",
            "k8s.io",
            "-id",
            "abc",
            "-address",
            "/run/c.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-debug",
            "start",
        ])
        .unwrap();
        assert_eq!(
            f,
            Flags {
                debug: true,
                namespace: "k8s.io".into(),
                id: "abc".into(),
                address: "/run/c.sock".into(),
                publish_binary: "/usr/bin/containerd".into(),
                action: "start".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn go_flag_forms() {
        let f = p(&["--namespace=ns", "-bundle=/b", "-debug=false", "-v", "--", "delete"]).unwrap();
        assert_eq!((f.namespace.as_str(), f.bundle.as_str(), f.debug, f.version, f.action.as_str()), ("ns", "/b", false, true, "delete"));
        let f = p(&["-socket", "/s", "serve-me", "-id", "x"]).unwrap();
        assert_eq!((f.socket.as_str(), f.action.as_str(), f.id.as_str()), ("/s", "serve-me", ""), "flags stop at the first argument");
        assert_eq!(p(&[]).unwrap(), Flags::default());
    }

    #[test]
    fn bad_flags_name_the_flag() {
        assert_eq!(p(&["-nope"]).unwrap_err(), "flag provided but not defined: -nope");
        assert_eq!(p(&["-id"]).unwrap_err(), "flag needs an argument: -id");
        assert_eq!(p(&["-debug=maybe"]).unwrap_err(), "invalid boolean value \"maybe\" for -debug");
    }
}
