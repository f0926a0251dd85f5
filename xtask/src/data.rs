//! `cargo xtask data` (being written).

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask data: not written yet")
}
