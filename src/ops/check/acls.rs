//! The `kafka-acls` command that grants the relay's principal what a failed check showed it
//! lacks: the fix, spelled out with the principal, the operation, the resource and its pattern.

use crate::sink::kafka::KafkaSettings;

/// The principal the broker sees: `User:<sasl.username>` for PLAIN and SCRAM; for a client
/// certificate or a token the broker's mapping decides, so a placeholder says so.
fn principal(kafka: &KafkaSettings) -> String {
    match kafka.properties.get("sasl.username") {
        Some(user) => format!("User:{user}"),
        None => "User:<the certificate's or token's principal>".into(),
    }
}

/// `kafka-acls.sh … --add --allow-principal P --operation O… <resource>` for this relay's broker,
/// `resource` being AclCommand's resource options (`--transactional-id outboxd-orders
/// --resource-pattern-type prefixed`).
pub(super) fn grant(kafka: &KafkaSettings, operations: &[&str], resource: &str) -> String {
    let operations: String = operations
        .iter()
        .map(|operation| format!(" --operation {operation}"))
        .collect();
    format!(
        "kafka-acls.sh --bootstrap-server {} --command-config admin.properties --add \
         --allow-principal {}{operations} {resource}",
        kafka.bootstrap_servers,
        principal(kafka)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_names_the_principal_operations_and_resource() {
        let mut kafka = KafkaSettings::new("broker:9093");
        kafka
            .properties
            .insert("sasl.username".into(), "outboxd-orders".into());
        assert_eq!(
            grant(
                &kafka,
                &["Write", "Describe"],
                "--transactional-id outboxd-orders --resource-pattern-type prefixed"
            ),
            "kafka-acls.sh --bootstrap-server broker:9093 --command-config admin.properties \
             --add --allow-principal User:outboxd-orders --operation Write --operation Describe \
             --transactional-id outboxd-orders --resource-pattern-type prefixed"
        );
    }
}
