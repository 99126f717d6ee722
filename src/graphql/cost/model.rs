//! The schema's shape as pricing needs it, read once from the SDL the server serves: which
//! fields return objects, which return lists and how long those lists may be.

use std::collections::HashMap;

use async_graphql::parser::{
    parse_schema,
    types::{BaseType, FieldDefinition, Type, TypeKind, TypeSystemDefinition},
};
use async_graphql::{Name, Value};

use crate::{catalog, pagination, sync::engine::MAX_RECORD_ERRORS};

/// The types of the schema, by name.
pub struct Model {
    types: HashMap<Name, Shape>,
}

/// What a type is, for pricing.
pub struct Shape {
    pub kind: Kind,
    pub fields: HashMap<Name, FieldShape>,
    /// For an interface or union: the object types it may be.
    pub possible: Vec<Name>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A scalar or an enum: free.
    Leaf,
    Object,
    /// A Relay connection (`…Connection` with `edges`, `nodes` and `pageInfo`): one list.
    Connection,
    /// An interface or a union.
    Abstract,
}

pub struct FieldShape {
    /// The named type under lists and non-null markers.
    pub ty: Name,
    pub list: bool,
    /// How many items a list returns at most when the request does not say.
    pub default_size: u64,
    /// Whether `first`/`last` set the size.
    pub paged: bool,
}

/// Lists without `first`/`last` and the most items they return (docs/queries.md).
fn cap(parent: &str, field: &str) -> Option<u64> {
    let entity_types = <entity::enums::EntityType as sea_orm::Iterable>::iter().count() as u64;
    Some(match (parent, field) {
        ("Query", "systems") => catalog::SYSTEMS.len() as u64,
        ("System", "credentialFields") => catalog::SYSTEMS
            .iter()
            .map(|s| s.credential_fields.len() as u64)
            .max()
            .unwrap_or(0),
        ("SyncRun", "entities") => entity_types,
        ("SyncRun", "recordErrors") => entity_types * MAX_RECORD_ERRORS as u64,
        ("Flow", "actions") => crate::flows::MAX_ACTIONS as u64,
        ("FlowBulkWrite", "fields") => crate::flows::MAX_FIELDS as u64,
        ("FlowTestResult", "matches") => crate::flows::MAX_TEST_MATCHES as u64,
        ("FlowTestResult", "evaluationErrors") => crate::flows::MAX_TEST_ERRORS as u64,
        _ => return None,
    })
}

impl Model {
    pub fn from_sdl(sdl: &str) -> Self {
        let document = parse_schema(sdl).expect("the served schema parses");
        let mut types: HashMap<Name, Shape> = HashMap::new();
        let mut implementations: Vec<(Name, Name)> = Vec::new();
        for definition in document.definitions {
            let TypeSystemDefinition::Type(definition) = definition else {
                continue;
            };
            let definition = definition.node;
            let name = definition.name.node;
            let (kind, fields, possible) = match definition.kind {
                TypeKind::Object(object) => {
                    for interface in &object.implements {
                        implementations.push((interface.node.clone(), name.clone()));
                    }
                    let kind = if is_connection(&name, &object.fields) {
                        Kind::Connection
                    } else {
                        Kind::Object
                    };
                    (kind, object.fields, Vec::new())
                }
                TypeKind::Interface(interface) => (Kind::Abstract, interface.fields, Vec::new()),
                TypeKind::Union(union) => (
                    Kind::Abstract,
                    Vec::new(),
                    union.members.into_iter().map(|m| m.node).collect(),
                ),
                _ => (Kind::Leaf, Vec::new(), Vec::new()),
            };
            let fields = fields
                .into_iter()
                .map(|f| (f.node.name.node.clone(), field_shape(&name, &f.node)))
                .collect();
            types.insert(
                name,
                Shape {
                    kind,
                    fields,
                    possible,
                },
            );
        }
        for (interface, object) in implementations {
            if let Some(shape) = types.get_mut(&interface) {
                shape.possible.push(object);
            }
        }
        Self { types }
    }

    pub fn shape(&self, name: &str) -> Option<&Shape> {
        self.types.get(name)
    }

    /// Whether a fragment on `condition` applies to an object of type `object`.
    pub fn applies(&self, condition: &str, object: &str) -> bool {
        condition == object
            || self
                .shape(condition)
                .is_some_and(|c| c.possible.iter().any(|p| p == object))
    }

    /// Lists of objects that are neither paged nor capped (priced at the largest page).
    #[cfg(test)]
    pub fn uncapped(&self) -> Vec<String> {
        let mut uncapped = Vec::new();
        for (parent, shape) in &self.types {
            if shape.kind == Kind::Connection {
                continue;
            }
            for (name, field) in &shape.fields {
                let leaf = self.shape(&field.ty).is_none_or(|t| t.kind == Kind::Leaf);
                if field.list && !leaf && !field.paged && cap(parent, name).is_none() {
                    uncapped.push(format!("{parent}.{name}"));
                }
            }
        }
        uncapped.sort();
        uncapped
    }
}

fn is_connection(name: &str, fields: &[async_graphql::Positioned<FieldDefinition>]) -> bool {
    let has = |field: &str| fields.iter().any(|f| f.node.name.node == field);
    name.ends_with("Connection") && has("edges") && has("nodes") && has("pageInfo")
}

fn field_shape(parent: &str, field: &FieldDefinition) -> FieldShape {
    let (ty, list) = named(&field.ty.node);
    let size_argument = field
        .arguments
        .iter()
        .find(|a| matches!(a.node.name.node.as_str(), "first" | "last"));
    let declared_default = size_argument
        .and_then(|a| a.node.default_value.as_ref())
        .and_then(|v| match &v.node {
            Value::Number(n) => n.as_u64(),
            _ => None,
        });
    let default_size = declared_default
        .or_else(|| size_argument.map(|_| pagination::DEFAULT_PAGE_SIZE as u64))
        .or_else(|| cap(parent, &field.name.node))
        .unwrap_or(pagination::MAX_PAGE_SIZE as u64);
    FieldShape {
        ty,
        list,
        default_size,
        paged: size_argument.is_some(),
    }
}

fn named(ty: &Type) -> (Name, bool) {
    match &ty.base {
        BaseType::Named(name) => (name.clone(), false),
        BaseType::List(inner) => (named(inner).0, true),
    }
}

impl Model {
    /// The most object types one interface or union stands for.
    pub fn widest_abstract(&self) -> usize {
        self.types
            .values()
            .map(|t| t.possible.len())
            .max()
            .unwrap_or(0)
    }
}
