//! What an operation costs, counted before it runs (docs/queries.md): the objects it may
//! return, each list multiplying what it selects on every item by its page size. An
//! operation dearer than `max_query_cost` is refused with `QUERY_TOO_COMPLEX`; every result
//! reports `extensions.cost { requested, limit }`. Queries, mutations and subscriptions, over
//! HTTP and WebSocket, go through [`price`].
//!
//! This is a walk of the parsed document beside the schema rather than an async-graphql
//! extension (which would put a hook around every resolved field) or `complexity`
//! attributes (which would replace the field-count limit, `max_query_complexity`, that stays).

mod model;
mod walk;

use std::sync::LazyLock;

use async_graphql::{
    Request, Response, ServerError, Value, Variables,
    parser::types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType},
};

use crate::config::HttpSettings;
use model::Model;
use walk::Walk;

static MODEL: LazyLock<Model> = LazyLock::new(|| Model::from_sdl(&super::sdl()));

/// Reads the schema's shape now rather than on the first request.
pub fn prepare() {
    LazyLock::force(&MODEL);
}

/// An operation's price, or why it has none.
#[derive(Debug)]
pub struct Price {
    /// `None` when the document does not parse or names no operation it holds: execution
    /// reports that.
    requested: Option<u64>,
    limit: u64,
    kind: Option<OperationType>,
    /// Set when the operation may not run.
    refusal: Option<ServerError>,
}

/// Prices the operation `request` asks for. The document is parsed here once and kept on
/// the request for execution.
pub fn price(request: &mut Request, http: &HttpSettings) -> Price {
    // Taken out while the parsed document borrows the request, and put back.
    let variables = std::mem::take(&mut request.variables);
    let name = request.operation_name.take();
    let price = match request.parsed_query() {
        Ok(document) => price_document(document, name.as_deref(), &variables, http),
        Err(_) => Price::unpriced(http.max_query_cost),
    };
    request.variables = variables;
    request.operation_name = name;
    price
}

fn price_document(
    document: &ExecutableDocument,
    name: Option<&str>,
    variables: &Variables,
    http: &HttpSettings,
) -> Price {
    let limit = http.max_query_cost;
    let Some(operation) = operation(document, name) else {
        return Price::unpriced(limit);
    };
    let kind = Some(operation.ty);
    let root = match operation.ty {
        OperationType::Query => "Query",
        OperationType::Mutation => "Mutation",
        OperationType::Subscription => "Subscription",
    };
    // The walk stops where the field-count and depth limits would refuse the operation
    // anyway; a field of an interface is looked at once per object type that narrows it.
    let budget = http
        .max_query_complexity
        .saturating_mul(MODEL.widest_abstract() + 1);
    let max_depth = http.max_query_depth + 2;
    let mut walk = Walk::new(&MODEL, document, operation, variables, budget, max_depth);
    match walk.selections(root, &[&operation.selection_set.node], 0) {
        Ok(requested) => Price {
            requested: Some(requested),
            limit,
            kind,
            refusal: (requested > limit).then(|| too_costly(requested, limit)),
        },
        Err(walk::TooLarge) => Price {
            requested: None,
            limit,
            kind,
            refusal: Some(too_large(http)),
        },
    }
}

fn operation<'d>(
    document: &'d ExecutableDocument,
    name: Option<&str>,
) -> Option<&'d OperationDefinition> {
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        (DocumentOperations::Multiple(_), None) => return None,
    };
    Some(&operation.node)
}

impl Price {
    fn unpriced(limit: u64) -> Self {
        Price {
            requested: None,
            limit,
            kind: None,
            refusal: None,
        }
    }

    pub fn is_subscription(&self) -> bool {
        self.kind == Some(OperationType::Subscription)
    }

    /// The answer to an operation that may not run: its error, with the cost when known.
    pub fn refusal(&self) -> Option<Response> {
        let error = self.refusal.clone()?;
        Some(self.report(Response::from_errors(vec![error])))
    }

    /// `response` with `extensions.cost`, when the operation was priced.
    pub fn report(&self, mut response: Response) -> Response {
        if let Some(cost) = self.cost() {
            response.extensions.insert("cost".to_owned(), cost);
        }
        response
    }

    fn cost(&self) -> Option<Value> {
        let requested = self.requested?;
        Some(cost_value(requested, self.limit))
    }
}

fn cost_value(requested: u64, limit: u64) -> Value {
    let mut cost = async_graphql::indexmap::IndexMap::new();
    cost.insert(
        async_graphql::Name::new("requested"),
        Value::from(requested),
    );
    cost.insert(async_graphql::Name::new("limit"), Value::from(limit));
    Value::Object(cost)
}

fn too_costly(requested: u64, limit: u64) -> ServerError {
    let message = format!(
        "the operation may return {requested} objects, more than the limit of {limit}: \
         ask for smaller pages (`first`) or fewer nested lists"
    );
    refusal(message, Some(cost_value(requested, limit)))
}

fn too_large(http: &HttpSettings) -> ServerError {
    let message = format!(
        "the operation is too large to price: more than {} fields or deeper than {} levels",
        http.max_query_complexity, http.max_query_depth
    );
    refusal(message, None)
}

fn refusal(message: String, cost: Option<Value>) -> ServerError {
    let mut error = ServerError::new(message, None);
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", "QUERY_TOO_COMPLEX");
    if let Some(cost) = cost {
        extensions.set("cost", cost);
    }
    error
}

#[cfg(test)]
mod tests;
