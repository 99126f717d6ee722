//! The walk over one operation that adds up its cost, following fragments and merging fields
//! that share a response key as execution does (docs/queries.md has the rule).

use std::collections::{HashMap, HashSet};

use async_graphql::parser::types::{
    Directive, ExecutableDocument, Field, OperationDefinition, Selection, SelectionSet,
};
use async_graphql::{Name, Positioned, Value as ConstValue, Variables};

use super::model::{FieldShape, Kind, Model};
use crate::pagination::MAX_PAGE_SIZE;

/// The walk gave up: the operation is larger or deeper than the server runs anyway.
#[derive(Debug)]
pub struct TooLarge;

pub struct Walk<'a> {
    model: &'a Model,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    defaults: HashMap<&'a str, &'a ConstValue>,
    /// Fields the walk may still look at.
    budget: usize,
    max_depth: usize,
}

type Fields<'a> = HashMap<&'a str, Vec<&'a Field>>;

/// Fragments are spread at most this deep inside one another (async-graphql refuses more).
const MAX_NESTING: usize = 64;

impl<'a> Walk<'a> {
    pub fn new(
        model: &'a Model,
        document: &'a ExecutableDocument,
        operation: &'a OperationDefinition,
        variables: &'a Variables,
        budget: usize,
        max_depth: usize,
    ) -> Self {
        let defaults = operation
            .variable_definitions
            .iter()
            .filter_map(|d| {
                let default = d.node.default_value.as_ref()?;
                Some((d.node.name.node.as_str(), &default.node))
            })
            .collect();
        Self {
            model,
            document,
            variables,
            defaults,
            budget,
            max_depth,
        }
    }

    /// The cost of `sets`, selected on a value of type `ty`.
    pub fn selections(
        &mut self,
        ty: &str,
        sets: &[&'a SelectionSet],
        depth: usize,
    ) -> Result<u64, TooLarge> {
        if depth > self.max_depth {
            return Err(TooLarge);
        }
        let Some(shape) = self.model.shape(ty) else {
            return Ok(0);
        };
        if shape.kind != Kind::Abstract {
            return self.object(ty, sets, depth);
        }
        // An abstract value is one of its object types: the dearest of them.
        let mut dearest = self.object(ty, sets, depth)?;
        for object in self.narrowed(ty, sets)? {
            dearest = dearest.max(self.object(&object, sets, depth)?);
        }
        Ok(dearest)
    }

    /// The cost of `sets` on an object of type `ty`: its fields, merged by response key.
    fn object(
        &mut self,
        ty: &str,
        sets: &[&'a SelectionSet],
        depth: usize,
    ) -> Result<u64, TooLarge> {
        let mut fields = Fields::new();
        let mut visited = HashSet::new();
        for set in sets {
            self.collect(ty, set, &mut fields, &mut visited, 0)?;
        }
        let mut total = 0u64;
        for merged in fields.values() {
            total = total.saturating_add(self.field(ty, merged, depth)?);
        }
        Ok(total)
    }

    /// The object types of `ty` that a type condition in `sets` names (each may select more).
    fn narrowed(&self, ty: &str, sets: &[&'a SelectionSet]) -> Result<Vec<Name>, TooLarge> {
        let mut conditions = HashSet::new();
        let mut visited = HashSet::new();
        for set in sets {
            self.conditions(set, &mut conditions, &mut visited, 0)?;
        }
        let possible = self.model.shape(ty).map_or(&[][..], |s| &s.possible[..]);
        Ok(possible
            .iter()
            .filter(|object| conditions.iter().any(|c| self.model.applies(c, object)))
            .cloned()
            .collect())
    }

    fn conditions(
        &self,
        set: &'a SelectionSet,
        out: &mut HashSet<&'a str>,
        visited: &mut HashSet<&'a str>,
        nesting: usize,
    ) -> Result<(), TooLarge> {
        if nesting > MAX_NESTING {
            return Err(TooLarge);
        }
        for selection in &set.items {
            let (condition, inner) = match &selection.node {
                Selection::Field(_) => continue,
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    let Some(fragment) = self.document.fragments.get(name) else {
                        continue;
                    };
                    if !visited.insert(name) {
                        continue;
                    }
                    let condition = &fragment.node.type_condition.node.on.node;
                    (Some(condition.as_str()), &fragment.node.selection_set.node)
                }
                Selection::InlineFragment(inline) => (
                    inline
                        .node
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.as_str()),
                    &inline.node.selection_set.node,
                ),
            };
            out.extend(condition);
            self.conditions(inner, out, visited, nesting + 1)?;
        }
        Ok(())
    }

    /// The spec's CollectFields: the fields `set` selects on an object of type `ty`, each
    /// fragment spread once.
    fn collect(
        &self,
        ty: &str,
        set: &'a SelectionSet,
        out: &mut Fields<'a>,
        visited: &mut HashSet<&'a str>,
        nesting: usize,
    ) -> Result<(), TooLarge> {
        if nesting > MAX_NESTING {
            return Err(TooLarge);
        }
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    if !self.skipped(&field.node.directives) {
                        let key = field.node.response_key().node.as_str();
                        out.entry(key).or_default().push(&field.node);
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    if self.skipped(&spread.node.directives) || !visited.insert(name) {
                        continue;
                    }
                    let Some(fragment) = self.document.fragments.get(name) else {
                        continue;
                    };
                    let fragment = &fragment.node;
                    if self.applies(&fragment.type_condition.node.on.node, ty) {
                        self.collect(ty, &fragment.selection_set.node, out, visited, nesting + 1)?;
                    }
                }
                Selection::InlineFragment(inline) => {
                    let inline = &inline.node;
                    let applies = inline
                        .type_condition
                        .as_ref()
                        .is_none_or(|c| self.applies(&c.node.on.node, ty));
                    if applies && !self.skipped(&inline.directives) {
                        self.collect(ty, &inline.selection_set.node, out, visited, nesting + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether a fragment on `condition` applies where a `ty` is selected (`ty` itself may
    /// be abstract: then fragments on it or on what contains it apply, and the dearest
    /// object type is priced separately).
    fn applies(&self, condition: &str, ty: &str) -> bool {
        let is_abstract = |name: &str| {
            self.model
                .shape(name)
                .is_some_and(|t| t.kind == Kind::Abstract)
        };
        self.model.applies(condition, ty) || (is_abstract(ty) && is_abstract(condition))
    }

    /// The cost of one response key of an object of type `parent`: what it returns times how
    /// many, plus what is selected on each.
    fn field(&mut self, parent: &str, merged: &[&'a Field], depth: usize) -> Result<u64, TooLarge> {
        let name = merged[0].name.node.as_str();
        if name.starts_with("__") {
            // Introspection and `__typename` are not priced.
            return Ok(0);
        }
        self.budget = self.budget.checked_sub(1).ok_or(TooLarge)?;
        let Some(shape) = self.model.shape(parent).and_then(|p| p.fields.get(name)) else {
            // Unknown: validation refuses it.
            return Ok(0);
        };
        let Some(kind) = self.model.shape(&shape.ty).map(|t| t.kind) else {
            return Ok(0);
        };
        let sets: Vec<&'a SelectionSet> = merged.iter().map(|f| &f.selection_set.node).collect();
        let each = match kind {
            Kind::Leaf => return Ok(0),
            Kind::Connection => return self.connection(shape, merged, &sets, depth),
            Kind::Object | Kind::Abstract => {
                1u64.saturating_add(self.selections(&shape.ty, &sets, depth + 1)?)
            }
        };
        Ok(if shape.list {
            self.size(shape, merged).saturating_mul(each)
        } else {
            each
        })
    }

    /// A connection is one list of `first` (or `last`) nodes: each costs 1 plus what
    /// `edges { node }` and `nodes` select on it; the connection, its edges, cursors and
    /// `pageInfo` are free.
    fn connection(
        &mut self,
        shape: &FieldShape,
        merged: &[&'a Field],
        sets: &[&'a SelectionSet],
        depth: usize,
    ) -> Result<u64, TooLarge> {
        let size = self.size(shape, merged);
        let per_node = self.inside_connection(&shape.ty, sets, depth + 1)?;
        Ok(size.saturating_mul(1u64.saturating_add(per_node)))
    }

    fn inside_connection(
        &mut self,
        ty: &str,
        sets: &[&'a SelectionSet],
        depth: usize,
    ) -> Result<u64, TooLarge> {
        if depth > self.max_depth {
            return Err(TooLarge);
        }
        let mut fields = Fields::new();
        let mut visited = HashSet::new();
        for set in sets {
            self.collect(ty, set, &mut fields, &mut visited, 0)?;
        }
        let mut per_node = 0u64;
        for merged in fields.values() {
            let name = merged[0].name.node.as_str();
            let Some(shape) = self.model.shape(ty).and_then(|t| t.fields.get(name)) else {
                continue;
            };
            let inner: Vec<&'a SelectionSet> =
                merged.iter().map(|f| &f.selection_set.node).collect();
            let cost = match name {
                "edges" => self.inside_connection(&shape.ty, &inner, depth + 1)?,
                "nodes" | "node" => self.selections(&shape.ty, &inner, depth + 1)?,
                "pageInfo" | "cursor" => 0,
                _ => self.field(ty, merged, depth)?,
            };
            per_node = per_node.saturating_add(cost);
        }
        Ok(per_node)
    }

    /// The items a list field returns at most: its `first`/`last`, else its default size.
    fn size(&self, shape: &FieldShape, merged: &[&Field]) -> u64 {
        if !shape.paged {
            return shape.default_size;
        }
        let asked = merged
            .iter()
            .flat_map(|f| ["first", "last"].map(|a| f.get_argument(a)))
            .flatten()
            .filter_map(|v| v.node.clone().into_const_with(self.filled()).ok())
            .filter_map(|v| match v {
                ConstValue::Number(n) => n.as_i64(),
                _ => None,
            })
            .max();
        match asked {
            // The resolver refuses a size out of range; price what it would allow.
            Some(n) => n.clamp(0, MAX_PAGE_SIZE as i64) as u64,
            None => shape.default_size,
        }
    }

    /// Fills in an argument's variables from the request or their defaults.
    fn filled(&self) -> impl FnMut(Name) -> Result<ConstValue, ()> + '_ {
        |name| self.variable(&name).cloned().ok_or(())
    }

    fn variable(&self, name: &Name) -> Option<&ConstValue> {
        self.variables
            .get(name)
            .or_else(|| self.defaults.get(name.as_str()).copied())
    }

    /// `@skip(if: true)` or `@include(if: false)`; a condition not known is not skipped.
    fn skipped(&self, directives: &[Positioned<Directive>]) -> bool {
        directives.iter().any(|d| {
            let condition = d
                .node
                .get_argument("if")
                .and_then(|v| v.node.clone().into_const_with(self.filled()).ok());
            let condition = match condition {
                Some(ConstValue::Boolean(b)) => Some(b),
                _ => None,
            };
            match d.node.name.node.as_str() {
                "skip" => condition == Some(true),
                "include" => condition == Some(false),
                _ => false,
            }
        })
    }
}
