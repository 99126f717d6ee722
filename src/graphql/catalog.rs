//! The systems catalog as GraphQL types.

use async_graphql::{Object, SimpleObject};

use crate::{
    catalog,
    graphql::enums::{self, Deployment, EntityType, SystemCategory},
};

pub struct System(pub &'static catalog::System);

#[Object]
impl System {
    async fn key(&self) -> &str {
        self.0.key
    }
    async fn name(&self) -> &str {
        self.0.name
    }
    async fn vendor(&self) -> &str {
        self.0.vendor
    }
    async fn category(&self) -> SystemCategory {
        self.0.category.into()
    }
    /// 1 (simple cloud CMMS), 2 (mid-size ERP) or 3 (SAP-class).
    async fn tier(&self) -> i32 {
        i32::from(self.0.tier)
    }
    async fn deployments(&self) -> Vec<Deployment> {
        enums::all(self.0.deployments)
    }
    /// Tier 1 = 1, tier 2 = 2, tier 3 = 4 credits; ON_PREMISES doubles.
    async fn credit_cost(&self, deployment: Deployment) -> i32 {
        self.0.credit_cost(deployment.into())
    }
    async fn entities(&self) -> Vec<EntityType> {
        enums::all(self.0.entities)
    }
    async fn writable_entities(&self) -> Vec<EntityType> {
        enums::all(self.0.writable_entities)
    }
    async fn credential_fields(&self) -> Vec<CredentialField> {
        self.0
            .credential_fields
            .iter()
            .map(|f| CredentialField {
                name: f.name,
                label: f.label,
                secret: f.secret,
                required: f.required,
            })
            .collect()
    }
}

#[derive(SimpleObject)]
pub struct CredentialField {
    pub name: &'static str,
    pub label: &'static str,
    pub secret: bool,
    pub required: bool,
}
