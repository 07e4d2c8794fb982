use capsa::Result;

pub fn run() -> Result<i32> {
    let v = capsa::features::features();
    super::out(&format!("{}\n", serde_json::to_string_pretty(&v).map_err(|e| capsa::Error::new(e.to_string()))?));
    Ok(0)
}
