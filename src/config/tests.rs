//! The declaration checked: bounds name their key, the file's keys are flat, retired keys
//! still load, and the README's tables are the declaration.

use std::fmt::Write as _;

use super::*;

#[test]
fn redacts_database_password() {
    assert_eq!(
        values::redact_url("postgres://u:secret@h/db"),
        "postgres://u:***@h/db"
    );
    assert_eq!(values::redact_url("sqlite://x.db"), "sqlite://x.db");
}

#[test]
fn debug_never_prints_secrets() {
    let mut config = Config::default();
    config.database.url = "postgres://u:db-password@h/db".into();
    config.security.admin_token = Some(Secret::new("super-secret-admin-token"));
    config.security.encryption_old_keys = Some(Secret::new("super-secret-old-keys"));
    let printed = format!("{config:?}");
    assert!(!printed.contains("super-secret"), "{printed}");
    assert!(!printed.contains("db-password"), "{printed}");
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

/// Puts one setting out of bounds.
type Breakage = fn(&mut Config);

#[test]
fn invalid_values_name_their_key() {
    let cases: [(Breakage, &str); 10] = [
        (
            |c| c.security.encryption_key = Some(Secret::new("short")),
            "encryption_key",
        ),
        (
            |c| {
                let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
                c.security.encryption_old_keys = Some(Secret::new(format!("{good},short")));
            },
            "encryption_old_keys",
        ),
        (
            |c| c.security.admin_token = Some(Secret::new("too-short")),
            "admin_token",
        ),
        (
            |c| c.database.sqlite_checkpoint_interval_ms = 60_001,
            "sqlite_checkpoint_interval_ms",
        ),
        (|c| c.sync.page_size = 10_001, "sync_page_size"),
        (|c| c.sync.lease_secs = u64::MAX, "sync_lease_secs"),
        (
            |c| c.events.feed_capacity = 50_000_000,
            "event_feed_capacity",
        ),
        (
            |c| c.http.ws_ping_interval_secs = 1 << 63,
            "ws_ping_interval_secs",
        ),
        (
            |c| c.webhooks.retry_schedule = vec![5, 30 * DAY],
            "webhook_retry_schedule",
        ),
        (|c| c.webhooks.workers = 0, "webhook_workers"),
    ];
    for (break_it, key) in cases {
        let mut config = Config::default();
        break_it(&mut config);
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains(&format!("`{key}`")), "{key}: {error}");
    }
}

#[test]
fn a_webhook_retention_shorter_than_the_retry_horizon_is_refused() {
    let mut config = Config::default();
    config.webhooks.retry_schedule = vec![60, 600];
    config.webhooks.retention_secs = 659;
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("`webhook_retention_secs`"), "{error}");
    assert!(error.contains("660 s"), "names the horizon: {error}");
    config.webhooks.retention_secs = 660;
    config.validate().unwrap();
    assert!(
        Config::default().webhooks.retention_secs
            >= Config::default().webhook_retry_horizon().as_secs(),
        "the defaults agree"
    );
}

fn file_with(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("millwright.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[test]
fn file_keys_are_flat_and_fill_their_sections() {
    let (_dir, path) = file_with(
        "sync_page_size = 77\nwebhook_retry_schedule = \"1, 2\"\nworkers = false\n\
         event_feed_capacity = 9\nadmin_token = 1234567890123456\n",
    );
    let config = Config::load(Some(&path)).unwrap().config;
    assert_eq!(config.sync.page_size, 77);
    assert_eq!(config.webhooks.retry_schedule, [1, 2]);
    assert!(!config.process.workers);
    assert_eq!(config.events.feed_capacity, 9);
    assert_eq!(
        config.security.admin_token.as_ref().map(Secret::expose),
        Some("1234567890123456")
    );
}

#[test]
fn file_errors_name_the_key() {
    for (text, key) in [
        ("sync_pagesize = 5\n", "sync_pagesize"),
        ("sync_page_size = \"many\"\n", "sync_page_size"),
        ("webhook_lease_secs = 0\n", "webhook_lease_secs"),
        ("[sync]\npage_size = 5\n", "`sync`: settings are flat keys"),
    ] {
        let (_dir, path) = file_with(text);
        let error = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(error.contains(key), "{text}: {error}");
    }
}

#[test]
fn retired_keys_are_accepted_and_reported() {
    let (_dir, path) = file_with("sync_schedule_minute_secs = 1\n");
    let loaded = Config::load(Some(&path)).unwrap();
    let keys: Vec<_> = loaded.retired.iter().map(|r| r.key).collect();
    assert_eq!(keys, ["sync_schedule_minute_secs"]);
    assert_eq!(
        loaded.config.testing.schedule_minute,
        Duration::from_secs(60)
    );
}

#[test]
fn every_setting_is_documented() {
    for setting in SETTINGS {
        assert!(!setting.doc_line().is_empty(), "{} has no doc", setting.key);
    }
    for section in SECTIONS {
        assert!(
            !section.doc_line().is_empty(),
            "{} has no doc",
            section.name
        );
    }
}

const TABLE_START: &str = "<!-- settings: start -->";
const TABLE_END: &str = "<!-- settings: end -->";

/// A default as the README shows it: the value a file or variable would carry.
fn shown(value: &serde_json::Value) -> String {
    let text = match value {
        serde_json::Value::Null => return "unset".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    format!("`{text}`")
}

/// The README's configuration reference, rendered from the declaration.
fn reference() -> String {
    let defaults = serde_json::to_value(FileAndEnv::default()).unwrap();
    let mut out = String::new();
    for section in SECTIONS {
        let _ = write!(
            out,
            "\n**{}**: {}\n\n| variable | default | allowed | meaning |\n|---|---|---|---|\n",
            section.name,
            section.doc_line()
        );
        for setting in SETTINGS.iter().filter(|s| s.section == section.name) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                setting.env_var(),
                shown(&defaults[setting.key]),
                setting.bounds.describe(),
                setting.doc_line().replace('|', "\\|")
            );
        }
    }
    out.push_str("\nRetired keys, still accepted and ignored with a warning at start:\n\n");
    for retired in RETIRED {
        let env_var = format!("{ENV_PREFIX}{}", retired.key.to_ascii_uppercase());
        let why = declare::one_line(retired.why);
        let _ = writeln!(out, "- `{env_var}`: {why}");
    }
    out
}

#[test]
fn readme_table_is_the_declaration() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find(TABLE_START)
        .expect("README marks its settings table");
    let end = readme
        .find(TABLE_END)
        .expect("README marks the table's end");
    let table = &readme[start + TABLE_START.len()..end];
    let expected = reference();
    assert!(
        table.trim() == expected.trim(),
        "README's settings table differs from the declaration in src/config.rs; \
         put this between the markers:\n{expected}"
    );
}

#[test]
fn readme_names_every_key_with_its_default() {
    // The rendered table above is exact; this says the same in the terms people check.
    let readme = include_str!("../../README.md");
    let defaults = serde_json::to_value(FileAndEnv::default()).unwrap();
    let rows: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with(&format!("| `{ENV_PREFIX}")))
        .collect();
    for setting in SETTINGS {
        let prefix = format!(
            "| `{}` | {} |",
            setting.env_var(),
            shown(&defaults[setting.key])
        );
        assert!(
            rows.iter().any(|row| row.starts_with(&prefix)),
            "README has no row `{prefix}`"
        );
    }
    for row in rows {
        assert!(
            SETTINGS
                .iter()
                .any(|s| row.starts_with(&format!("| `{}` ", s.env_var()))),
            "README documents a variable the declaration lacks: {row}"
        );
    }
}
