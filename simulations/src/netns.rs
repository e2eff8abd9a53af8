use crate::{RunOutcome, Scenario};
use std::path::Path;
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("{0}")]
    NotHere(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
pub fn run(_sc: &Scenario, _bin: &Path, _out: &Path) -> Result<RunOutcome, NetnsError> {
    Err(NetnsError::NotHere("todo".into()))
}
