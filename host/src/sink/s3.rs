//! Placeholder: this sink is not available yet. Configuring it fails at start-up.

use super::{SinkContext, SinkError, SinkInput};
use serde::Deserialize;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3SinkConfig {
    pub routes: Vec<String>,
}

impl S3SinkConfig {
    pub fn check(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

pub async fn start(
    ctx: SinkContext,
    _config: &S3SinkConfig,
    _rx: mpsc::Receiver<SinkInput>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    Err(SinkError::Start {
        sink: ctx.name,
        message: "this sink type is not available in this build".into(),
    })
}
