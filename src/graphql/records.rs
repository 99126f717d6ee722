//! Unified records as GraphQL types: the `UnifiedRecord` interface and one type per entity.

use async_graphql::{Context, ID, Interface, Json, Object};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::enums::{EntityType, WorkOrderPriority, WorkOrderStatus};
use crate::{
    catalog,
    error::{AppError, AppResult},
    ids,
    records::unified,
};
use entity::record;

fn text(model: &record::Model, key: &str) -> Option<String> {
    model
        .data
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn number(model: &record::Model, key: &str) -> Option<f64> {
    model.data.get(key).and_then(Value::as_f64)
}

fn time(model: &record::Model, key: &str) -> Option<DateTime<Utc>> {
    text(model, key)
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A unified enum field as its GraphQL mirror; a stored text this release does not know is
/// an error, not a null.
fn unified_enum<T: serde::de::DeserializeOwned, U: From<T>>(
    model: &record::Model,
    field: &str,
) -> AppResult<Option<U>> {
    unified::stored::<T>(&model.data, field)
        .map(|v| v.map(U::from))
        .map_err(|why| AppError::internal(anyhow::anyhow!("record {}: {why}", model.id)))
}

/// The related record of the same connection with this key, through the request's loader.
async fn related(
    ctx: &Context<'_>,
    model: &record::Model,
    entity: catalog::EntityType,
    key_field: &str,
) -> AppResult<Option<record::Model>> {
    let Some(key) = text(model, key_field) else {
        return Ok(None);
    };
    let loaders = super::loaders(ctx)?;
    loaders
        .records
        .load_one((model.connection_id, entity, key))
        .await
}

/// Declares a record type: the fields every unified record has, then its own.
macro_rules! record_type {
    ($name:ident { $($extra:tt)* }) => {
        pub struct $name(pub record::Model);

        #[Object]
        impl $name {
            pub async fn id(&self) -> ID {
                ID(ids::encode(ids::Kind::Record, self.0.id))
            }
            pub async fn entity(&self) -> EntityType {
                self.0.entity.into()
            }
            /// The remote system's identifier.
            pub async fn key(&self) -> &str {
                &self.0.key
            }
            pub async fn remote_created_at(&self) -> Option<DateTime<Utc>> {
                self.0.remote_created_at
            }
            pub async fn remote_updated_at(&self) -> Option<DateTime<Utc>> {
                self.0.remote_updated_at
            }
            pub async fn first_seen_at(&self) -> DateTime<Utc> {
                self.0.first_seen_at
            }
            pub async fn modified_at(&self) -> DateTime<Utc> {
                self.0.modified_at
            }
            pub async fn deleted_at(&self) -> Option<DateTime<Utc>> {
                self.0.deleted_at
            }
            /// The unified fields as one object.
            pub async fn data(&self) -> Json<Value> {
                Json(self.0.data.clone())
            }
            /// The record as the remote system sent it.
            pub async fn remote_data(&self) -> Option<Json<Value>> {
                self.0.remote_data.clone().map(Json)
            }
            $($extra)*
        }
    };
}

record_type!(Asset {
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    async fn description(&self) -> Option<String> { text(&self.0, "description") }
    async fn serial_number(&self) -> Option<String> { text(&self.0, "serialNumber") }
    async fn make_name(&self) -> Option<String> { text(&self.0, "makeName") }
    async fn model_name(&self) -> Option<String> { text(&self.0, "modelName") }
    async fn criticality(&self) -> Option<String> { text(&self.0, "criticality") }
    async fn is_active(&self) -> Option<bool> { self.0.data.get("isActive").and_then(Value::as_bool) }
    async fn site_key(&self) -> Option<String> { text(&self.0, "siteKey") }
    async fn location_key(&self) -> Option<String> { text(&self.0, "locationKey") }
    async fn parent_key(&self) -> Option<String> { text(&self.0, "parentKey") }
    async fn site(&self, ctx: &Context<'_>) -> AppResult<Option<Site>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Site, "siteKey").await?.map(Site))
    }
    async fn location(&self, ctx: &Context<'_>) -> AppResult<Option<Location>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Location, "locationKey").await?.map(Location))
    }
    async fn parent(&self, ctx: &Context<'_>) -> AppResult<Option<Asset>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Asset, "parentKey").await?.map(Asset))
    }
});

record_type!(WorkOrder {
    async fn title(&self) -> Option<String> { text(&self.0, "title") }
    async fn instructions(&self) -> Option<String> { text(&self.0, "instructions") }
    /// The state in the unified model; null when the remote's word has no mapping.
    async fn status(&self) -> AppResult<Option<WorkOrderStatus>> { unified_enum::<unified::WorkOrderStatus, _>(&self.0, "status") }
    /// The remote's own word for the state (Maximo `WAPPR`, SAP `REL  PRC`, …).
    async fn remote_status(&self) -> Option<String> { text(&self.0, "remoteStatus") }
    /// The urgency in the unified model; null when the remote's value has no mapping.
    async fn priority(&self) -> AppResult<Option<WorkOrderPriority>> { unified_enum::<unified::WorkOrderPriority, _>(&self.0, "priority") }
    /// The remote's own priority value (Maximo `1`–`5`, SAP `1`–`4`, MaintainX `HIGH`, …).
    async fn remote_priority(&self) -> Option<String> { text(&self.0, "remotePriority") }
    async fn asset_key(&self) -> Option<String> { text(&self.0, "assetKey") }
    async fn location_key(&self) -> Option<String> { text(&self.0, "locationKey") }
    async fn site_key(&self) -> Option<String> { text(&self.0, "siteKey") }
    async fn due_at(&self) -> Option<DateTime<Utc>> { time(&self.0, "dueAt") }
    async fn scheduled_at(&self) -> Option<DateTime<Utc>> { time(&self.0, "scheduledAt") }
    async fn completed_at(&self) -> Option<DateTime<Utc>> { time(&self.0, "completedAt") }
    async fn asset(&self, ctx: &Context<'_>) -> AppResult<Option<Asset>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Asset, "assetKey").await?.map(Asset))
    }
});

record_type!(Site {
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    async fn code(&self) -> Option<String> { text(&self.0, "code") }
    async fn timezone(&self) -> Option<String> { text(&self.0, "timezone") }
});

record_type!(Location {
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    async fn site_key(&self) -> Option<String> { text(&self.0, "siteKey") }
    async fn site(&self, ctx: &Context<'_>) -> AppResult<Option<Site>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Site, "siteKey").await?.map(Site))
    }
});

record_type!(Part {
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    async fn part_number(&self) -> Option<String> { text(&self.0, "partNumber") }
    async fn unit_cost(&self) -> Option<f64> { number(&self.0, "unitCost") }
    async fn quantity(&self) -> Option<f64> { number(&self.0, "quantity") }
});

record_type!(PurchaseOrder {
    async fn number(&self) -> Option<String> { text(&self.0, "number") }
    async fn vendor_key(&self) -> Option<String> { text(&self.0, "vendorKey") }
    async fn status(&self) -> Option<String> { text(&self.0, "status") }
    async fn total(&self) -> Option<f64> { number(&self.0, "total") }
    async fn vendor(&self, ctx: &Context<'_>) -> AppResult<Option<Vendor>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Vendor, "vendorKey").await?.map(Vendor))
    }
});

record_type!(Vendor {
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    async fn email(&self) -> Option<String> { text(&self.0, "email") }
});

record_type!(User {
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    async fn email(&self) -> Option<String> { text(&self.0, "email") }
    async fn role(&self) -> Option<String> { text(&self.0, "role") }
});

#[expect(
    clippy::duplicated_attributes,
    reason = "each interface field repeats `ty =` by design"
)]
#[derive(Interface)]
#[graphql(
    field(name = "id", ty = "ID"),
    field(name = "entity", ty = "EntityType"),
    field(name = "key", ty = "&str"),
    field(name = "remote_created_at", ty = "Option<DateTime<Utc>>"),
    field(name = "remote_updated_at", ty = "Option<DateTime<Utc>>"),
    field(name = "first_seen_at", ty = "DateTime<Utc>"),
    field(name = "modified_at", ty = "DateTime<Utc>"),
    field(name = "deleted_at", ty = "Option<DateTime<Utc>>"),
    field(name = "data", ty = "Json<Value>"),
    field(name = "remote_data", ty = "Option<Json<Value>>")
)]
pub enum UnifiedRecord {
    Site(Site),
    Location(Location),
    Asset(Asset),
    WorkOrder(WorkOrder),
    Part(Part),
    PurchaseOrder(PurchaseOrder),
    Vendor(Vendor),
    User(User),
}

impl UnifiedRecord {
    pub fn of(model: record::Model) -> Self {
        match model.entity {
            catalog::EntityType::Site => UnifiedRecord::Site(Site(model)),
            catalog::EntityType::Location => UnifiedRecord::Location(Location(model)),
            catalog::EntityType::Asset => UnifiedRecord::Asset(Asset(model)),
            catalog::EntityType::WorkOrder => UnifiedRecord::WorkOrder(WorkOrder(model)),
            catalog::EntityType::Part => UnifiedRecord::Part(Part(model)),
            catalog::EntityType::PurchaseOrder => {
                UnifiedRecord::PurchaseOrder(PurchaseOrder(model))
            }
            catalog::EntityType::Vendor => UnifiedRecord::Vendor(Vendor(model)),
            catalog::EntityType::User => UnifiedRecord::User(User(model)),
        }
    }
}
