//! The `outboxd` command line.

use clap::Parser;

/// Moves committed PostgreSQL changes into Apache Kafka exactly once.
#[derive(Debug, Parser)]
#[command(name = "outboxd", version, about)]
struct Cli {}

fn main() {
    Cli::parse();
}
