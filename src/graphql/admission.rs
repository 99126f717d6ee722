//! What a request must be before it runs, checked once at the edge for HTTP and WebSocket
//! alike: every text it carries, in its variables and in the literals of its document, holds
//! no control character other than tab, line feed and carriage return.
//!
//! A NUL or an escape character in a name, a search string or a metadata value has no
//! legitimate use here; PostgreSQL cannot store a NUL in `text` or `jsonb` at all, and a
//! terminal or a log viewer that shows the other ones can be made to lie. Refusing them at the
//! edge gives one answer (`BAD_USER_INPUT`, naming where the character is) on every database,
//! for every field, present and future.
//!
//! The document is parsed here and the parse is kept in the request, so the schema does not
//! parse it again.

use async_graphql::{
    Name, Pos, Positioned, Request, ServerError, Value as ConstValue,
    parser::types::{Directive, Selection, SelectionSet},
};
use async_graphql_value::Value;

/// Refuses a request whose text holds a control character; a document that does not parse
/// is left for execution to report as usual.
pub fn check(request: &mut Request) -> Result<(), ServerError> {
    for (name, value) in request.variables.iter() {
        check_value(&format!("${name}"), value, None)?;
    }
    let Ok(document) = request.parsed_query() else {
        return Ok(());
    };
    for (_, operation) in document.operations.iter() {
        for variable in &operation.node.variable_definitions {
            if let Some(default) = &variable.node.default_value {
                let place = format!("${} (its default)", variable.node.name.node);
                check_value(&place, &default.node, Some(default.pos))?;
            }
        }
        check_directives(&operation.node.directives)?;
        check_selections(&operation.node.selection_set)?;
    }
    for fragment in document.fragments.values() {
        check_directives(&fragment.node.directives)?;
        check_selections(&fragment.node.selection_set)?;
    }
    Ok(())
}

fn check_selections(set: &Positioned<SelectionSet>) -> Result<(), ServerError> {
    for selection in &set.node.items {
        match &selection.node {
            Selection::Field(field) => {
                for (name, value) in &field.node.arguments {
                    let place = format!("{}({})", field.node.name.node, name.node);
                    check_literal(&place, &value.node, value.pos)?;
                }
                check_directives(&field.node.directives)?;
                check_selections(&field.node.selection_set)?;
            }
            Selection::FragmentSpread(spread) => check_directives(&spread.node.directives)?,
            Selection::InlineFragment(inline) => {
                check_directives(&inline.node.directives)?;
                check_selections(&inline.node.selection_set)?;
            }
        }
    }
    Ok(())
}

fn check_directives(directives: &[Positioned<Directive>]) -> Result<(), ServerError> {
    for directive in directives {
        for (name, value) in &directive.node.arguments {
            let place = format!("@{}({})", directive.node.name.node, name.node);
            check_literal(&place, &value.node, value.pos)?;
        }
    }
    Ok(())
}

/// A literal in the document; variables in it are checked with the request's variables.
fn check_literal(place: &str, value: &Value, pos: Pos) -> Result<(), ServerError> {
    match value {
        Value::String(text) => check_text(place, text, Some(pos)),
        Value::Enum(_) => Ok(()),
        Value::List(items) => items
            .iter()
            .try_for_each(|item| check_literal(place, item, pos)),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let place = format!("{place}.{key}");
            check_key(&place, key, Some(pos))?;
            check_literal(&place, item, pos)
        }),
        _ => Ok(()),
    }
}

fn check_value(place: &str, value: &ConstValue, pos: Option<Pos>) -> Result<(), ServerError> {
    match value {
        ConstValue::String(text) => check_text(place, text, pos),
        ConstValue::List(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_value(&format!("{place}[{i}]"), item, pos)),
        ConstValue::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let place = format!("{place}.{key}");
            check_key(&place, key, pos)?;
            check_value(&place, item, pos)
        }),
        _ => Ok(()),
    }
}

fn check_key(place: &str, key: &Name, pos: Option<Pos>) -> Result<(), ServerError> {
    check_text(&format!("{place} (its key)"), key.as_str(), pos)
}

fn check_text(place: &str, text: &str, pos: Option<Pos>) -> Result<(), ServerError> {
    match text.chars().find(|&c| is_refused(c)) {
        None => Ok(()),
        Some(c) => {
            let mut error = ServerError::new(
                format!(
                    "`{place}` holds the control character U+{:04X}; text may hold tab, line \
                     feed and carriage return but no other control character",
                    u32::from(c)
                ),
                pos,
            );
            error
                .extensions
                .get_or_insert_with(Default::default)
                .set("code", "BAD_USER_INPUT");
            Err(error)
        }
    }
}

/// Unicode's control characters (C0, DEL, C1) except tab, line feed and carriage return.
fn is_refused(c: char) -> bool {
    c.is_control() && !matches!(c, '\t' | '\n' | '\r')
}

#[cfg(test)]
mod tests {
    use async_graphql::{Request, Variables};
    use serde_json::json;

    use super::check;

    fn request(query: &str, variables: serde_json::Value) -> Request {
        Request::new(query).variables(Variables::from_json(variables))
    }

    #[test]
    fn control_characters_are_found_wherever_the_text_is() {
        let refused = [
            request("{ a(name: \"x\\u0000y\") }", json!({})),
            request("{ a(input: { name: \"\\u001b[31m\" }) }", json!({})),
            request("{ a(list: [\"ok\", \"\\u007f\"]) }", json!({})),
            request("{ a @include(if: true) { b(s: \"\\u0085\") } }", json!({})),
            request("{ ...F } fragment F on Q { a(s: \"\\u0001\") }", json!({})),
            request("query($s: String = \"\\u0002\") { a(s: $s) }", json!({})),
            request("query($s: String) { a(s: $s) }", json!({ "s": "a\u{0}b" })),
            request(
                "query($j: JSON) { a(j: $j) }",
                json!({ "j": { "k": ["x", "\u{1}"] } }),
            ),
            request(
                "query($j: JSON) { a(j: $j) }",
                json!({ "j": { "k\u{0}": 1 } }),
            ),
        ];
        for mut request in refused {
            let query = request.query.clone();
            let error = check(&mut request).expect_err(&query);
            assert!(error.message.contains("control character U+"), "{error:?}");
        }
        let mut fine = request(
            "query($s: String) { a(s: \"tab\\tline\\nreturn\\r ünïcödé ✓\", t: $s) }",
            json!({ "s": "multi\nline\ttext" }),
        );
        check(&mut fine).unwrap();
        assert!(
            fine.parsed_query().is_ok(),
            "the parse is kept for execution"
        );
    }

    #[test]
    fn a_document_that_does_not_parse_is_left_to_execution() {
        check(&mut request("{ a(", json!({}))).unwrap();
    }
}
