//! docker's output conventions: tables aligned like Go's tabwriter (3 spaces of padding),
//! sizes in decimal units with 3 significant digits (`4.26MB`), ages in words
//! (`2 weeks ago`), and a subset of Go templates for `--format`:
//! `{{.Field}}`, `{{json .}}`, `{{json .Field}}`, `\t`/`\n`, and a `table ` prefix.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::cli::{fail, Result};

/// Prints rows under headers, columns padded to their widest cell plus 3 spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let n = cells.len();
        for (i, c) in cells.into_iter().enumerate() {
            out.push_str(c);
            if i + 1 < n {
                out.push_str(&" ".repeat(w[i] - c.chars().count() + 3));
            }
        }
        out.push('\n');
    };
    line(headers.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

/// go-units HumanSizeWithPrecision(n, 3): decimal units.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{}{}", sig3(v), UNITS[i])
}

/// `%.3g` as Go prints it (no trailing zeros, no exponent for these magnitudes).
fn sig3(v: f64) -> String {
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units HumanDuration.
pub fn duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    let hours = (s as f64 / 3600.0).round() as i64;
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", s / 3600 / 24 / 365)
    }
}

/// Unix seconds of an RFC 3339 time (`2024-01-02T03:04:05.5Z`, `…+01:00`).
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let n = |a: usize, z: usize| s.get(a..z)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (n(0, 4)?, n(5, 7)?, n(8, 10)?, n(11, 13)?, n(14, 16)?, n(17, 19)?);
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600 + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = if y2 >= 0 { y2 } else { y2 - 399 } / 400;
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + h * 3600 + mi * 60 + se - offset)
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `N units ago` for an RFC 3339 time, `N/A` when there is none.
pub fn ago(created: Option<&str>) -> String {
    match created.and_then(parse_time) {
        Some(t) => format!("{} ago", duration(now() - t)),
        None => "N/A".into(),
    }
}

/// A `--format` template over objects with named fields.
pub struct Template {
    parts: Vec<Part>,
    pub table: bool,
}

enum Part {
    Text(String),
    Field(String),
    Json(Option<String>),
}

impl Template {
    pub fn parse(t: &str) -> Result<Template> {
        let (table, t) = match t.strip_prefix("table") {
            Some(r) if r.is_empty() || r.starts_with(' ') || r.starts_with('\t') => (true, r.trim_start()),
            _ => (false, t),
        };
        let t = t.replace("\\t", "\t").replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = t.as_str();
        while let Some(i) = rest.find("{{") {
            parts.push(Part::Text(rest[..i].to_string()));
            let end = rest[i..].find("}}").ok_or_else(|| fail(format!("template: {t:?}: unclosed action")))? + i;
            let action = rest[i + 2..end].trim();
            let words: Vec<&str> = action.split_whitespace().collect();
            let field = |w: &str| -> Result<Option<String>> {
                match w {
                    "." => Ok(None),
                    f if f.starts_with('.') && f.len() > 1 => Ok(Some(f[1..].to_string())),
                    _ => Err(fail(format!("template: {action:?}: want .Field"))),
                }
            };
            match words.as_slice() {
                ["json", arg] => parts.push(Part::Json(field(arg)?)),
                [arg] => match field(arg)? {
                    Some(f) => parts.push(Part::Field(f)),
                    None => parts.push(Part::Json(None)),
                },
                _ => return Err(fail(format!("template: {action:?}: only {{{{.Field}}}} and {{{{json .}}}} are supported"))),
            }
            rest = &rest[end + 2..];
        }
        parts.push(Part::Text(rest.to_string()));
        Ok(Template { parts, table })
    }

    /// The header line of a `table` template: each field's docker header.
    pub fn header(&self, names: &BTreeMap<&str, &str>) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(names.get(f.as_str()).copied().unwrap_or(f.as_str())),
                Part::Json(_) => {}
            }
        }
        out
    }

    pub fn render(&self, obj: &BTreeMap<String, Value>) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => match lookup(obj, f) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v) => out.push_str(&v.to_string()),
                    None => return Err(fail(format!("template: can't evaluate field {f}"))),
                },
                Part::Json(None) => out.push_str(&serde_json::to_string(obj).unwrap_or_default()),
                Part::Json(Some(f)) => {
                    let v = lookup(obj, f).ok_or_else(|| fail(format!("template: can't evaluate field {f}")))?;
                    out.push_str(&serde_json::to_string(v).unwrap_or_default());
                }
            }
        }
        Ok(out)
    }
}

/// `A.B.C`: field A of the object, then B and C inside it.
fn lookup<'a>(obj: &'a BTreeMap<String, Value>, path: &str) -> Option<&'a Value> {
    let mut it = path.split('.');
    let mut v = obj.get(it.next()?)?;
    for k in it {
        v = v.get(k)?;
    }
    Some(v)
}

/// Renders rows with a template; a `table` template gets a header and aligned columns.
pub fn with_template(t: &Template, headers: &BTreeMap<&str, &str>, rows: &[BTreeMap<String, Value>]) -> Result<String> {
    let lines: Vec<String> = rows.iter().map(|r| t.render(r)).collect::<Result<_>>()?;
    if !t.table {
        return Ok(lines.iter().map(|l| format!("{l}\n")).collect());
    }
    let head: Vec<String> = t.header(headers).split('\t').map(str::to_string).collect();
    let cells: Vec<Vec<String>> = lines.iter().map(|l| l.split('\t').map(str::to_string).collect()).collect();
    let h: Vec<&str> = head.iter().map(String::as_str).collect();
    Ok(table(&h, &cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(size(4_261_234), "4.26MB");
        assert_eq!(size(150_000_000), "150MB");
        assert_eq!(size(1500), "1.5kB");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1_000_000), "1MB");
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(duration(0), "Less than a second");
        assert_eq!(duration(90), "About a minute");
        assert_eq!(duration(3 * 86400), "3 days");
        assert_eq!(duration(20 * 86400), "2 weeks");
        assert_eq!(parse_time("1970-01-02T00:00:00Z"), Some(86400));
        assert_eq!(parse_time("2024-02-29T12:00:00.123+01:00"), Some(1709204400));
    }

    #[test]
    fn templates() {
        let t = Template::parse("{{.Repository}}:{{.Tag}}").unwrap();
        let mut o = BTreeMap::new();
        o.insert("Repository".to_string(), Value::from("busybox"));
        o.insert("Tag".to_string(), Value::from("latest"));
        assert_eq!(t.render(&o).unwrap(), "busybox:latest");
        assert!(Template::parse("{{.Nope}}").unwrap().render(&o).is_err());
        assert_eq!(Template::parse("{{json .Tag}}").unwrap().render(&o).unwrap(), "\"latest\"");
        let t = Template::parse("table {{.Repository}}\\t{{.Tag}}").unwrap();
        let mut names = BTreeMap::new();
        names.insert("Repository", "REPOSITORY");
        names.insert("Tag", "TAG");
        assert_eq!(with_template(&t, &names, &[o]).unwrap(), "REPOSITORY   TAG\nbusybox      latest\n");
    }
}
