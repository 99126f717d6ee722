//! `bulk_records`: one record of a bulk operation, as given, and its outcome once written.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "bulk_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub operation_id: Uuid,
    /// The record's index in `bulkWrite`'s `records`, from 0.
    #[sea_orm(primary_key, auto_increment = false)]
    pub position: i32,
    /// The unified fields to write.
    pub data: Json,
    /// `None` until its batch has been written.
    pub succeeded: Option<bool>,
    pub remote_key: Option<String>,
    /// The remote's message for a record it refused.
    pub error: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::bulk_operation::Entity",
        from = "Column::OperationId",
        to = "super::bulk_operation::Column::Id"
    )]
    Operation,
}

impl Related<super::bulk_operation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Operation.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
