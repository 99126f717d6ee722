//! The systems catalog as GraphQL types.

use async_graphql::{Enum, Object, SimpleObject};

use crate::{
    catalog,
    graphql::enums::{self, Deployment, EntityType, SystemCategory, WriteOperation},
};

pub struct System(pub &'static catalog::System);

/// A kind of system that can be connected (MaintainX, IBM Maximo, SAP, the demo CMMS).
#[Object]
impl System {
    /// The key to pass as `systemKey` to `connect` (`maintainx`, `ibm_maximo`, …).
    async fn key(&self) -> &str {
        self.0.key
    }
    /// The product's name.
    async fn name(&self) -> &str {
        self.0.name
    }
    /// Who makes the product.
    async fn vendor(&self) -> &str {
        self.0.vendor
    }
    /// What kind of system it is.
    async fn category(&self) -> SystemCategory {
        self.0.category.into()
    }
    /// 1 (simple cloud CMMS), 2 (mid-size ERP) or 3 (SAP-class).
    async fn tier(&self) -> i32 {
        i32::from(self.0.tier)
    }
    /// The deployments it can be connected as.
    async fn deployments(&self) -> Vec<Deployment> {
        enums::all(self.0.deployments)
    }
    /// Tier 1 = 1, tier 2 = 2, tier 3 = 4 credits; ON_PREMISES doubles.
    async fn credit_cost(
        &self,
        #[graphql(desc = "The deployment to price.")] deployment: Deployment,
    ) -> i32 {
        self.0.credit_cost(deployment.into())
    }
    /// The entity types a sync reads from it.
    async fn entities(&self) -> Vec<EntityType> {
        enums::all(self.0.entities)
    }
    /// The entity types `bulkWrite` writes back to it.
    async fn writable_entities(&self) -> Vec<EntityType> {
        enums::all(&self.0.writable_entities())
    }
    /// What `bulkWrite` may do to `entity` in it (empty when it is read-only).
    async fn write_operations(
        &self,
        #[graphql(desc = "The entity type.")] entity: EntityType,
    ) -> Vec<WriteOperation> {
        enums::all(self.0.write_operations(entity.into()))
    }
    /// The keys the `credentials` object of `connect` takes.
    async fn credential_fields(&self) -> Vec<CredentialField> {
        self.0
            .credential_fields
            .iter()
            .map(|f| {
                let (kind, min, max, choices) = match f.kind {
                    catalog::FieldKind::Text => (CredentialFieldKind::Text, None, None, None),
                    catalog::FieldKind::Integer { min, max } => {
                        let clamp =
                            |n: i64| n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
                        (
                            CredentialFieldKind::Integer,
                            Some(clamp(min)),
                            Some(clamp(max)),
                            None,
                        )
                    }
                    catalog::FieldKind::OneOf(choices) => (
                        CredentialFieldKind::OneOf,
                        None,
                        None,
                        Some(choices.to_vec()),
                    ),
                    catalog::FieldKind::Object => (CredentialFieldKind::Object, None, None, None),
                };
                CredentialField {
                    name: f.name,
                    label: f.label,
                    secret: f.secret,
                    required: f.required,
                    kind,
                    min,
                    max,
                    choices,
                }
            })
            .collect()
    }
}

/// One key of a system's `credentials` object.
#[derive(SimpleObject)]
pub struct CredentialField {
    /// The key in the `credentials` object.
    pub name: &'static str,
    /// A human-readable label for a form.
    pub label: &'static str,
    /// Whether the value is a secret (show it masked; it is encrypted at rest either way).
    pub secret: bool,
    /// Whether `connect` refuses credentials without it.
    pub required: bool,
    /// What the value is: text, a whole number, one of `choices`, or a JSON object.
    pub kind: CredentialFieldKind,
    /// The least whole number allowed (`INTEGER` only).
    pub min: Option<i32>,
    /// The greatest whole number allowed (`INTEGER` only).
    pub max: Option<i32>,
    /// The values allowed (`ONE_OF` only).
    pub choices: Option<Vec<&'static str>>,
}

/// What a credential field's value is, so that a form can offer the right input.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum CredentialFieldKind {
    /// A JSON string.
    Text,
    /// A JSON number without a fraction, between `min` and `max`.
    Integer,
    /// A JSON string, one of `choices`.
    OneOf,
    /// A JSON object; its shape is described in docs/connectors.md.
    Object,
}
