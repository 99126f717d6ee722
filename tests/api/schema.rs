//! `schema.graphql` is what the server serves.

#[test]
fn committed_schema_matches_the_served_schema() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql at the repository root");
    let served = millwright::graphql::sdl();
    assert!(
        committed.trim_end() == served.trim_end(),
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn cli_prints_the_served_schema() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_millwright"))
        .arg("schema")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap().trim_end(),
        millwright::graphql::sdl().trim_end()
    );
}
