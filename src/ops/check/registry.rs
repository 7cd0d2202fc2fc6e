//! The Schema Registry, when Avro needs one (`[schema_registry]`): it answers, and takes
//! outboxd's credentials. A refused password is found here rather than at the first Avro
//! record, when the relay would stop.

use super::report::Report;
use crate::registry::RegistryError;
use crate::relay::RelayConfig;

const AREA: &str = "registry";

/// Checks the registry `config` uses, if any.
pub(super) async fn checks(config: &RelayConfig, report: &mut Report) {
    let Some(registry) = &config.registry else {
        return;
    };
    let url = registry.url();
    match registry.probe().await {
        Ok(()) => report.ok(AREA, format!("the schema registry at {url} answers")),
        Err(error) => {
            let fix = match error {
                RegistryError::Unauthorized { .. } => {
                    "set schema_registry.username and its password (password_file or \
                     OUTBOXD__SCHEMA_REGISTRY__PASSWORD) to credentials the registry takes"
                }
                RegistryError::Tls(_) => "set schema_registry.ca_file to the registry's CA",
                _ => "start the registry, or correct schema_registry.url",
            };
            report.fail(AREA, error.to_string(), fix);
        }
    }
}
