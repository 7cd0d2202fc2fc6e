//! The relay against a secured broker, as managed Kafka runs it.

/// The librdkafka this binary links speaks TLS, SCRAM and OAUTHBEARER with OIDC: without them
/// production brokers cannot be reached (the build must keep rdkafka's `ssl`, `curl-static` and
/// `cmake-build` features).
#[test]
fn librdkafka_is_built_with_tls_sasl_and_oidc() {
    let features = rdkafka::ClientConfig::new()
        .create_native_config()
        .expect("native config")
        .get("builtin.features")
        .expect("builtin.features");
    for feature in [
        "ssl",
        "sasl_plain",
        "sasl_scram",
        "sasl_oauthbearer",
        "oidc",
    ] {
        assert!(
            features.split(',').any(|f| f == feature),
            "librdkafka lacks {feature}: {features}"
        );
    }
}
