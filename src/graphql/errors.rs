//! Gives every GraphQL error its `extensions.code` and keeps internal details out of
//! responses (logging them once). Applied to every response, over HTTP and WebSocket.
//!
//! This is done on the response rather than in an async-graphql extension: an extension
//! puts a hook around every resolved field, which costs a noticeable share of throughput.

use std::sync::Arc;

use async_graphql::{Response, ServerError, Value};

use crate::error::AppError;

pub fn normalize(mut response: Response) -> Response {
    for error in &mut response.errors {
        classify(error);
    }
    response
}

/// An error of a whole operation (of no field), coded as a resolver's would be.
pub fn request_error(error: AppError) -> ServerError {
    let mut server_error = ServerError::new(error.to_string(), None);
    server_error.source = Some(Arc::new(error));
    classify(&mut server_error);
    server_error
}

/// Sets `extensions.code`; replaces the message of anything unexpected with an opaque one.
pub fn classify(error: &mut ServerError) {
    if error
        .extensions
        .as_ref()
        .is_some_and(|e| e.get("code").is_some())
    {
        return;
    }
    let code = match error.source::<AppError>().cloned() {
        Some(app) => {
            if let AppError::Internal(detail) = &app {
                tracing::error!(error = format!("{detail:#}"), path = ?error.path, "internal error");
            }
            if let AppError::RateLimited {
                retry_after_seconds,
            } = &app
            {
                set_extension(
                    error,
                    "retryAfterSeconds",
                    Value::from(*retry_after_seconds),
                );
            }
            if let AppError::InvalidRecords { problems, count } = &app {
                set_extension(error, "problems", problems_value(problems));
                set_extension(error, "problemCount", Value::from(*count as u64));
            }
            if let AppError::InvalidExpression {
                field,
                line,
                column,
                ..
            } = &app
            {
                set_extension(error, "field", Value::from(field.as_str()));
                set_extension(error, "line", Value::from(*line as u64));
                set_extension(error, "column", Value::from(*column as u64));
            }
            app.code()
        }
        None => classify_library_error(error),
    };
    set_extension(error, "code", Value::from(code));
}

/// Errors raised by async-graphql itself: parsing, validation, limits, argument coercion.
fn classify_library_error(error: &mut ServerError) -> &'static str {
    let message = error.message.as_str();
    let too_complex = [
        "nested too deep",
        "too complex",
        "recursion depth",
        "number of directives",
    ];
    if too_complex.iter().any(|needle| message.contains(needle)) {
        return "QUERY_TOO_COMPLEX";
    }
    if error.path.is_empty()
        || message.starts_with("Failed to parse")
        || message.starts_with("Invalid value")
        // A variable the request declared but did not send, or sent with the wrong type,
        // is found only where it is used.
        || message.starts_with("Variable ")
        || message.starts_with("Internal error: Failed to parse")
    {
        return "BAD_USER_INPUT";
    }
    tracing::error!(error = %error.message, path = ?error.path, "unclassified resolver error");
    error.message = "internal error".to_owned();
    "INTERNAL"
}

/// `[{index, field, message}]`, as the GraphQL response carries them.
fn problems_value(problems: &[crate::bulk::fields::Problem]) -> Value {
    Value::List(
        problems
            .iter()
            .map(|p| {
                let mut object = async_graphql::indexmap::IndexMap::new();
                object.insert(
                    async_graphql::Name::new("index"),
                    Value::from(p.index as u64),
                );
                object.insert(
                    async_graphql::Name::new("field"),
                    p.field.clone().map_or(Value::Null, Value::from),
                );
                object.insert(
                    async_graphql::Name::new("message"),
                    Value::from(p.message.clone()),
                );
                Value::Object(object)
            })
            .collect(),
    )
}

fn set_extension(error: &mut ServerError, key: &str, value: Value) {
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set(key, value);
}
