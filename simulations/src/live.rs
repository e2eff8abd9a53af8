use crate::{RunOutcome, Scenario};
pub fn run(_sc: &Scenario) -> anyhow::Result<RunOutcome> {
    anyhow::bail!("todo")
}
