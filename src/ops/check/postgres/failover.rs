//! What a failover needs for the slot to survive it (PostgreSQL 17's failover slots): the slot
//! created with `failover`, `synchronized_standby_slots` on the primary (so the relay never gets
//! ahead of the standby), and on each standby `sync_replication_slots`, `hot_standby_feedback` and
//! a `primary_slot_name`. Standbys are checked when `postgres.url` names them (a multi-host URL).

use super::super::report::Report;
use crate::pg::wire::{ConnectOptions, Session, TargetSessionAttrs, WireError};
use crate::relay::RelayConfig;

const AREA: &str = "failover";

/// The failover checks, on the server `session` reaches (the primary) and the other hosts of the
/// URL.
pub(super) async fn failover(
    session: &mut Session,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), WireError> {
    let major = session.server_version_num() / 10_000;
    if major < 17 {
        report.info(
            AREA,
            format!(
                "PostgreSQL {major} does not carry logical slots to standbys: a failover loses \
                 the slot (the relay then stops saying so; PostgreSQL 17+ keeps failover slots)"
            ),
        );
        return Ok(());
    }
    if !config.failover_slot {
        report.info(
            AREA,
            "postgres.failover_slot = false: the slot does not survive a failover",
        );
        return Ok(());
    }
    let row = crate::ops::first_row(
        session,
        "SELECT current_setting('synchronized_standby_slots'), \
                (SELECT failover FROM pg_catalog.pg_replication_slots WHERE slot_name = $1), \
                (SELECT count(*) FROM pg_catalog.pg_replication_slots \
                  WHERE slot_type = 'physical')",
        &[config.slot.as_str()],
    )
    .await?
    .unwrap_or_default();
    let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let standby_slots = column(0);
    // Without a standby (no physical slot, one host in the URL) there is nothing to fail over to.
    if column(2) == "0" && config.postgres.hosts.len() < 2 {
        report.info(
            AREA,
            "no standby (no physical slot here, one host in postgres.url): the failover \
             settings are checked once there is one",
        );
        return Ok(());
    }
    match column(1).as_str() {
        "f" => report.warn(
            AREA,
            format!(
                "slot {:?} is not a failover slot: standbys do not synchronize it",
                config.slot
            ),
            format!(
                "over a replication connection (psql \"dbname=... replication=database\"): \
                 ALTER_REPLICATION_SLOT {} (FAILOVER true)",
                config.slot
            ),
        ),
        "t" => report.ok(AREA, format!("slot {:?} is a failover slot", config.slot)),
        _ => report.ok(
            AREA,
            format!("slot {:?} will be created as a failover slot", config.slot),
        ),
    }
    if standby_slots.is_empty() {
        report.warn(
            AREA,
            "synchronized_standby_slots is empty: the relay may publish changes a standby has \
             not received, and refuses to resume after a failover to it",
            "ALTER SYSTEM SET synchronized_standby_slots = '<the standby's primary_slot_name>'; \
             SELECT pg_reload_conf();",
        );
    } else {
        report.ok(
            AREA,
            format!("synchronized_standby_slots = {standby_slots}"),
        );
    }
    if config.postgres.hosts.len() < 2 {
        report.info(
            AREA,
            "postgres.url names one server: on each standby set sync_replication_slots = on, \
             hot_standby_feedback = on, primary_slot_name (listed in the primary's \
             synchronized_standby_slots) and dbname in primary_conninfo; list the standbys in \
             postgres.url (host=primary,standby&target_session_attrs=read-write) so the relay \
             follows a promotion and check verifies them",
        );
        return Ok(());
    }
    for endpoint in &config.postgres.hosts {
        let one = ConnectOptions {
            hosts: vec![endpoint.clone()],
            target_session_attrs: TargetSessionAttrs::Standby,
            ..config.postgres.clone()
        };
        // The primary, or a host down: not a standby to check.
        let Ok(mut standby) = Session::connect(&one).await else {
            continue;
        };
        standby_settings(
            &mut standby,
            &endpoint.to_string(),
            &standby_slots,
            config,
            report,
        )
        .await?;
    }
    Ok(())
}

/// A standby's side of slot synchronization.
async fn standby_settings(
    standby: &mut Session,
    name: &str,
    standby_slots: &str,
    config: &RelayConfig,
    report: &mut Report,
) -> Result<(), WireError> {
    let row = crate::ops::first_row(
        standby,
        "SELECT current_setting('sync_replication_slots'), \
                current_setting('hot_standby_feedback'), \
                current_setting('primary_slot_name'), \
                (SELECT synced FROM pg_catalog.pg_replication_slots WHERE slot_name = $1)",
        &[config.slot.as_str()],
    )
    .await?
    .unwrap_or_default();
    let column = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    for (setting, value) in [
        ("sync_replication_slots", column(0)),
        ("hot_standby_feedback", column(1)),
    ] {
        if value == "on" {
            report.ok(AREA, format!("standby {name}: {setting} = on"));
        } else {
            report.warn(
                AREA,
                format!("standby {name}: {setting} = {value}; slot synchronization needs on"),
                format!("on {name}: ALTER SYSTEM SET {setting} = on; SELECT pg_reload_conf();"),
            );
        }
    }
    let primary_slot = column(2);
    if primary_slot.is_empty() || !standby_slots.split(',').any(|s| s.trim() == primary_slot) {
        report.warn(
            AREA,
            format!(
                "standby {name}: primary_slot_name = {primary_slot:?} is not in the primary's \
                 synchronized_standby_slots ({standby_slots:?})"
            ),
            "give the standby a physical slot (primary_slot_name) and list it in the primary's \
             synchronized_standby_slots",
        );
    }
    if column(3) == "t" {
        report.ok(
            AREA,
            format!(
                "standby {name} holds a synchronized copy of slot {:?}",
                config.slot
            ),
        );
    } else {
        report.warn(
            AREA,
            format!(
                "standby {name} holds no synchronized copy of slot {:?} (yet)",
                config.slot
            ),
            "the copy appears once the relay confirmed the slot and the settings above hold; \
             primary_conninfo must name a dbname",
        );
    }
    Ok(())
}
