//! The schema and the guide document themselves: every type, field, argument, enum value and
//! input field of the served schema has a capitalised description (the description rules of
//! graphql-schema-linter), and every type and operation is named in `docs/`.

use std::collections::BTreeSet;
use std::path::Path;

use async_graphql::parser::{
    parse_schema,
    types::{FieldDefinition, InputValueDefinition, TypeKind, TypeSystemDefinition},
};
use async_graphql::{Positioned, parser::types::ServiceDocument};

fn served_schema() -> ServiceDocument {
    parse_schema(millwright::graphql::sdl()).expect("the served SDL parses")
}

/// Records `what` as a problem unless `description` is present and starts with a capital
/// letter (or any character that has no lower case, such as a backtick or a digit).
fn check(problems: &mut Vec<String>, what: String, description: Option<&Positioned<String>>) {
    match description.map(|d| d.node.trim()) {
        None | Some("") => problems.push(format!("{what} has no description")),
        Some(text) if text.starts_with(char::is_lowercase) => {
            problems.push(format!("{what}: description is not capitalised: {text:?}"))
        }
        Some(_) => {}
    }
}

fn check_arguments(
    problems: &mut Vec<String>,
    owner: &str,
    args: &[Positioned<InputValueDefinition>],
) {
    for arg in args {
        let what = format!("argument {owner}({}:)", arg.node.name.node);
        check(problems, what, arg.node.description.as_ref());
    }
}

fn check_fields(
    problems: &mut Vec<String>,
    type_name: &str,
    fields: &[Positioned<FieldDefinition>],
) {
    for field in fields {
        let owner = format!("{type_name}.{}", field.node.name.node);
        check(
            problems,
            format!("field {owner}"),
            field.node.description.as_ref(),
        );
        check_arguments(problems, &owner, &field.node.arguments);
    }
}

#[test]
fn every_type_field_argument_and_value_has_a_capitalised_description() {
    let mut problems = Vec::new();
    for definition in served_schema().definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = ty.node;
        let name = ty.name.node.as_str();
        check(
            &mut problems,
            format!("type {name}"),
            ty.description.as_ref(),
        );
        match &ty.kind {
            TypeKind::Object(object) => check_fields(&mut problems, name, &object.fields),
            TypeKind::Interface(interface) => check_fields(&mut problems, name, &interface.fields),
            TypeKind::Enum(values) => {
                for value in &values.values {
                    let what = format!("enum value {name}.{}", value.node.value.node);
                    check(&mut problems, what, value.node.description.as_ref());
                }
            }
            TypeKind::InputObject(input) => {
                for field in &input.fields {
                    let what = format!("input field {name}.{}", field.node.name.node);
                    check(&mut problems, what, field.node.description.as_ref());
                }
            }
            TypeKind::Scalar | TypeKind::Union(_) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "{} schema elements lack a proper description:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Every identifier that appears inside an inline code span (`like this`) in a Markdown
/// file under `dir`; fenced code blocks do not count, so naming something means writing it
/// out in the prose or a table.
fn names_in_code_spans(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("docs/ is readable") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            names_in_code_spans(&path, names);
            continue;
        }
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            if fenced {
                continue;
            }
            for span in line.split('`').skip(1).step_by(2) {
                let identifiers = span
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|word| word.starts_with(|c: char| c.is_ascii_alphabetic()));
                names.extend(identifiers.map(str::to_owned));
            }
        }
    }
}

#[test]
fn docs_name_every_type_and_operation() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut named = BTreeSet::new();
    names_in_code_spans(&docs, &mut named);

    let mut missing = Vec::new();
    for definition in served_schema().definitions {
        let TypeSystemDefinition::Type(ty) = definition else {
            continue;
        };
        let ty = ty.node;
        let name = ty.name.node.to_string();
        let is_root = matches!(name.as_str(), "Query" | "Mutation" | "Subscription");
        if !is_root && !named.contains(&name) {
            missing.push(format!("type {name}"));
        }
        if let TypeKind::Object(object) = &ty.kind
            && is_root
        {
            for field in &object.fields {
                let operation = field.node.name.node.to_string();
                if !named.contains(&operation) {
                    missing.push(format!("{name}.{operation}"));
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not named in `code` anywhere under docs/:\n{}",
        missing.join("\n")
    );
}
