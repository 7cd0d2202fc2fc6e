//! Settings that name one of a fixed set of values: an unknown name is an error listing the
//! allowed ones.

use serde::Deserialize;

use super::sections::{AfterPublishName, CdcFormat, EnvelopeName, ValueConventionName};
use crate::logging::LogFormat;
use crate::route::avro::SubjectStrategy;
use crate::route::cdc::values::{BinaryMode, DecimalMode, TimePrecisionMode};
use crate::route::outbox::{CloudEventsMode, KeyFormat};
use crate::settings::{RelayMode, SnapshotMode};

/// A setting with a fixed set of values, read from its name; an unknown name is an error that lists
/// the allowed ones.
pub(super) trait Choice: Sized + Copy + 'static {
    /// Every value by its name in the file.
    const CHOICES: &'static [(&'static str, Self)];
}

/// Deserializes a [`Choice`] by name.
pub(super) fn choice<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Choice,
{
    let name = String::deserialize(deserializer)?;
    T::CHOICES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| *value)
        .ok_or_else(|| {
            let allowed: Vec<_> = T::CHOICES.iter().map(|(n, _)| format!("{n:?}")).collect();
            serde::de::Error::custom(format!("{name:?} is not one of {}", allowed.join(", ")))
        })
}

impl Choice for EnvelopeName {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("debezium-outbox", Self::DebeziumOutbox),
        ("cloudevents", Self::Cloudevents),
    ];
}

impl Choice for CdcFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[("json", Self::Json), ("avro", Self::Avro)];
}

impl Choice for SubjectStrategy {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("topic", Self::Topic),
        ("record", Self::Record),
        ("topic_record", Self::TopicRecord),
    ];
}

impl Choice for RelayMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("logical", Self::Logical), ("poll", Self::Poll)];
}

impl Choice for SnapshotMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("never", Self::Never),
        ("no_data", Self::Never),
        ("initial", Self::Initial),
        ("initial_only", Self::InitialOnly),
        ("when_needed", Self::WhenNeeded),
    ];
}

impl Choice for AfterPublishName {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("delete", Self::Delete), ("mark", Self::Mark)];
}

impl Choice for LogFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("auto", Self::Auto),
        ("json", Self::Json),
        ("text", Self::Text),
    ];
}

impl Choice for KeyFormat {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("string", Self::String),
        ("json", Self::Json),
        ("avro", Self::Avro),
    ];
}

impl Choice for CloudEventsMode {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("structured", Self::Structured), ("binary", Self::Binary)];
}

impl Choice for ValueConventionName {
    const CHOICES: &'static [(&'static str, Self)] =
        &[("debezium", Self::Debezium), ("natural", Self::Natural)];
}

impl Choice for DecimalMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("precise", Self::Precise),
        ("double", Self::Double),
        ("string", Self::String),
    ];
}

impl Choice for TimePrecisionMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("adaptive", Self::Adaptive),
        ("adaptive_time_microseconds", Self::AdaptiveTimeMicroseconds),
        ("connect", Self::Connect),
    ];
}

impl Choice for BinaryMode {
    const CHOICES: &'static [(&'static str, Self)] = &[
        ("bytes", Self::Bytes),
        ("base64", Self::Base64),
        ("hex", Self::Hex),
    ];
}
