use capsa::Result;

/// runc's `features` JSON; the annotations also say how this binary was built (runc lists
/// its commit and version there too).
pub fn run() -> Result<i32> {
    let mut v = capsa::features::features();
    let b = super::build_info::get();
    if let Some(a) = v.get_mut("annotations").and_then(|a| a.as_object_mut()) {
        a.insert("org.opencontainers.capsa.commit".into(), b.commit.into());
        a.insert("org.opencontainers.capsa.build".into(), b.summary().into());
    }
    super::out(&format!("{}\n", serde_json::to_string_pretty(&v).map_err(|e| capsa::Error::new(e.to_string()))?));
    Ok(0)
}
