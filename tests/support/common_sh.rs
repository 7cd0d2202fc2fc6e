//! The settings `scripts/common.sh` defines (tool versions, install locations, PostgreSQL majors),
//! read by sourcing it as the scripts do, so the tests never restate them.

use std::process::Command;

/// The values of the shell variables `names` after sourcing `scripts/common.sh`, one per name.
pub fn values(names: &[&str]) -> Vec<String> {
    let printed: Vec<String> = names.iter().map(|name| format!("\"${name}\"")).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            r#"source "$1" && printf '%s\n' {}"#,
            printed.join(" ")
        ))
        .arg("bash")
        .arg(super::repo_root().join("scripts/common.sh"))
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "sourcing scripts/common.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 values");
    let values: Vec<String> = text.lines().map(str::to_owned).collect();
    assert_eq!(
        values.len(),
        names.len(),
        "scripts/common.sh printed {text:?} for {names:?}"
    );
    values
}
