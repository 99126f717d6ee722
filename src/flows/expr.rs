//! TEMPORARY compile stub (replaced by the real module before commit).
#![allow(dead_code, unused_variables, clippy::todo)]
use crate::catalog::EntityType;
use crate::records::unified::FieldType;
pub struct Scope {
    pub entity: EntityType,
    pub target: Option<EntityType>,
}
pub enum Want {
    Bool,
    Field(FieldType),
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}
pub struct Compiled {
    source: String,
}
impl Compiled {
    pub fn source(&self) -> &str {
        &self.source
    }
    pub fn cost(&self) -> u64 {
        0
    }
}
pub fn compile(source: &str, scope: &Scope, want: Want) -> Result<Compiled, ExprError> {
    todo!()
}
#[derive(Clone)]
pub struct Activation {
    pub record: cel::Value,
    pub previous: cel::Value,
    pub changed: cel::Value,
    pub connection: cel::Value,
    pub customer: cel::Value,
    pub now: cel::Value,
    pub target: Option<cel::Value>,
}
pub fn record_value(entity: EntityType, key: &str, data: &serde_json::Value) -> cel::Value {
    todo!()
}
pub fn changed_value(names: &[&str]) -> cel::Value {
    todo!()
}
pub fn connection_value(
    id: &str,
    system_key: &str,
    label: Option<&str>,
    metadata: Option<&serde_json::Value>,
) -> cel::Value {
    todo!()
}
pub fn customer_value(id: &str, external_id: Option<&str>) -> cel::Value {
    todo!()
}
pub fn now_value(at: chrono::DateTime<chrono::Utc>) -> cel::Value {
    todo!()
}
pub fn json_value(value: &serde_json::Value) -> cel::Value {
    todo!()
}
pub fn to_json(value: &cel::Value) -> Result<serde_json::Value, String> {
    todo!()
}
pub struct Evaluator;
impl Evaluator {
    pub fn new() -> Self {
        Evaluator
    }
    pub fn matches(&self, expr: &Compiled, vars: &Activation) -> Result<bool, String> {
        todo!()
    }
    pub fn value(&self, expr: &Compiled, vars: &Activation) -> Result<cel::Value, String> {
        todo!()
    }
}
