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
    ($(#[$meta:meta])* $name:ident { $($extra:tt)* }) => {
        pub struct $name(pub record::Model);

        $(#[$meta])*
        #[Object]
        impl $name {
            /// The record's id (`rec_…`).
            pub async fn id(&self) -> ID {
                ID(ids::encode(ids::Kind::Record, self.0.id))
            }
            /// The record's entity type.
            pub async fn entity(&self) -> EntityType {
                self.0.entity.into()
            }
            /// The remote system's identifier.
            pub async fn key(&self) -> &str {
                &self.0.key
            }
            /// When the remote system says the record was created, if it says.
            pub async fn remote_created_at(&self) -> Option<DateTime<Utc>> {
                self.0.remote_created_at
            }
            /// When the remote system says the record was last changed, if it says.
            pub async fn remote_updated_at(&self) -> Option<DateTime<Utc>> {
                self.0.remote_updated_at
            }
            /// When a sync first read the record.
            pub async fn first_seen_at(&self) -> DateTime<Utc> {
                self.0.first_seen_at
            }
            /// When a sync last changed the stored record (added, updated or deleted it).
            pub async fn modified_at(&self) -> DateTime<Utc> {
                self.0.modified_at
            }
            /// When a sync found the record gone from the remote; null while it exists.
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

record_type!(
    /// A piece of equipment that is maintained.
    Asset {
    /// The asset's name.
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    /// The asset's description.
    async fn description(&self) -> Option<String> { text(&self.0, "description") }
    /// The manufacturer's serial number.
    async fn serial_number(&self) -> Option<String> { text(&self.0, "serialNumber") }
    /// The manufacturer.
    async fn make_name(&self) -> Option<String> { text(&self.0, "makeName") }
    /// The model.
    async fn model_name(&self) -> Option<String> { text(&self.0, "modelName") }
    /// How critical the asset is, in the remote's own terms.
    async fn criticality(&self) -> Option<String> { text(&self.0, "criticality") }
    /// Whether the remote considers the asset in service.
    async fn is_active(&self) -> Option<bool> { self.0.data.get("isActive").and_then(Value::as_bool) }
    /// The `key` of the asset's site.
    async fn site_key(&self) -> Option<String> { text(&self.0, "siteKey") }
    /// The `key` of the asset's location.
    async fn location_key(&self) -> Option<String> { text(&self.0, "locationKey") }
    /// The `key` of the asset this one is part of.
    async fn parent_key(&self) -> Option<String> { text(&self.0, "parentKey") }
    /// The asset's site, if synced.
    async fn site(&self, ctx: &Context<'_>) -> AppResult<Option<Site>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Site, "siteKey").await?.map(Site))
    }
    /// The asset's location, if synced.
    async fn location(&self, ctx: &Context<'_>) -> AppResult<Option<Location>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Location, "locationKey").await?.map(Location))
    }
    /// The asset this one is part of, if synced.
    async fn parent(&self, ctx: &Context<'_>) -> AppResult<Option<Asset>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Asset, "parentKey").await?.map(Asset))
    }
});

record_type!(
    /// A job to be done on an asset or at a location.
    WorkOrder {
    /// The work order's title.
    async fn title(&self) -> Option<String> { text(&self.0, "title") }
    /// What is to be done.
    async fn instructions(&self) -> Option<String> { text(&self.0, "instructions") }
    /// The state in the unified model; null when the remote's word has no mapping.
    async fn status(&self) -> AppResult<Option<WorkOrderStatus>> { unified_enum::<unified::WorkOrderStatus, _>(&self.0, "status") }
    /// The remote's own word for the state (Maximo `WAPPR`, SAP `REL  PRC`, …).
    async fn remote_status(&self) -> Option<String> { text(&self.0, "remoteStatus") }
    /// The urgency in the unified model; null when the remote's value has no mapping.
    async fn priority(&self) -> AppResult<Option<WorkOrderPriority>> { unified_enum::<unified::WorkOrderPriority, _>(&self.0, "priority") }
    /// The remote's own priority value (Maximo `1`–`5`, SAP `1`–`4`, MaintainX `HIGH`, …).
    async fn remote_priority(&self) -> Option<String> { text(&self.0, "remotePriority") }
    /// The `key` of the asset worked on.
    async fn asset_key(&self) -> Option<String> { text(&self.0, "assetKey") }
    /// The `key` of the location worked at.
    async fn location_key(&self) -> Option<String> { text(&self.0, "locationKey") }
    /// The `key` of the site worked at.
    async fn site_key(&self) -> Option<String> { text(&self.0, "siteKey") }
    /// When the work is due.
    async fn due_at(&self) -> Option<DateTime<Utc>> { time(&self.0, "dueAt") }
    /// When the work is scheduled to start.
    async fn scheduled_at(&self) -> Option<DateTime<Utc>> { time(&self.0, "scheduledAt") }
    /// When the work was completed.
    async fn completed_at(&self) -> Option<DateTime<Utc>> { time(&self.0, "completedAt") }
    /// The asset worked on, if synced.
    async fn asset(&self, ctx: &Context<'_>) -> AppResult<Option<Asset>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Asset, "assetKey").await?.map(Asset))
    }
});

record_type!(
    /// A plant, facility or other top-level place.
    Site {
    /// The site's name.
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    /// The site's short code.
    async fn code(&self) -> Option<String> { text(&self.0, "code") }
    /// The site's time zone, as the remote names it.
    async fn timezone(&self) -> Option<String> { text(&self.0, "timezone") }
});

record_type!(
    /// A place within a site.
    Location {
    /// The location's name.
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    /// The `key` of the location's site.
    async fn site_key(&self) -> Option<String> { text(&self.0, "siteKey") }
    /// The location's site, if synced.
    async fn site(&self, ctx: &Context<'_>) -> AppResult<Option<Site>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Site, "siteKey").await?.map(Site))
    }
});

record_type!(
    /// A spare part or material kept in stock.
    Part {
    /// The part's name.
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    /// The part number.
    async fn part_number(&self) -> Option<String> { text(&self.0, "partNumber") }
    /// The cost of one unit, in the remote's currency.
    async fn unit_cost(&self) -> Option<f64> { number(&self.0, "unitCost") }
    /// The quantity on hand.
    async fn quantity(&self) -> Option<f64> { number(&self.0, "quantity") }
});

record_type!(
    /// An order placed with a vendor.
    PurchaseOrder {
    /// The order number.
    async fn number(&self) -> Option<String> { text(&self.0, "number") }
    /// The `key` of the vendor ordered from.
    async fn vendor_key(&self) -> Option<String> { text(&self.0, "vendorKey") }
    /// The order's status, in the remote's own terms.
    async fn status(&self) -> Option<String> { text(&self.0, "status") }
    /// The order's total, in the remote's currency.
    async fn total(&self) -> Option<f64> { number(&self.0, "total") }
    /// The vendor ordered from, if synced.
    async fn vendor(&self, ctx: &Context<'_>) -> AppResult<Option<Vendor>> {
        Ok(related(ctx, &self.0, catalog::EntityType::Vendor, "vendorKey").await?.map(Vendor))
    }
});

record_type!(
    /// A supplier.
    Vendor {
    /// The vendor's name.
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    /// The vendor's email address.
    async fn email(&self) -> Option<String> { text(&self.0, "email") }
});

record_type!(
    /// A person who uses the remote system.
    User {
    /// The user's name.
    async fn name(&self) -> Option<String> { text(&self.0, "name") }
    /// The user's email address.
    async fn email(&self) -> Option<String> { text(&self.0, "email") }
    /// The user's role, in the remote's own terms.
    async fn role(&self) -> Option<String> { text(&self.0, "role") }
});

#[expect(
    clippy::duplicated_attributes,
    reason = "each interface field repeats `ty =` by design"
)]
#[derive(Interface)]
#[graphql(
    field(name = "id", ty = "ID", desc = "The record's id (`rec_…`)."),
    field(name = "entity", ty = "EntityType", desc = "The record's entity type."),
    field(name = "key", ty = "&str", desc = "The remote system's identifier."),
    field(
        name = "remote_created_at",
        ty = "Option<DateTime<Utc>>",
        desc = "When the remote system says the record was created, if it says."
    ),
    field(
        name = "remote_updated_at",
        ty = "Option<DateTime<Utc>>",
        desc = "When the remote system says the record was last changed, if it says."
    ),
    field(
        name = "first_seen_at",
        ty = "DateTime<Utc>",
        desc = "When a sync first read the record."
    ),
    field(
        name = "modified_at",
        ty = "DateTime<Utc>",
        desc = "When a sync last changed the stored record (added, updated or deleted it)."
    ),
    field(
        name = "deleted_at",
        ty = "Option<DateTime<Utc>>",
        desc = "When a sync found the record gone from the remote; null while it exists."
    ),
    field(
        name = "data",
        ty = "Json<Value>",
        desc = "The unified fields as one object."
    ),
    field(
        name = "remote_data",
        ty = "Option<Json<Value>>",
        desc = "The record as the remote system sent it."
    )
)]
/// A record of any entity type, synced from a connection's remote system.
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
