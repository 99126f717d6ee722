//! Mutation root.

use async_graphql::{Context, ID, InputObject, MaybeUndefined, Object};
use uuid::Uuid;

use super::{
    account::{Account, ApiKey, CreateAccountPayload, CreateApiKeyPayload, CreditBalance},
    customer::{CreateCustomerInput, Customer, UpdateCustomerInput},
};
use crate::{
    accounts,
    customers::{self, CustomerChanges, NewCustomer},
    error::AppResult,
    ids,
};

pub struct Mutation;

#[derive(InputObject)]
pub struct CreateAccountInput {
    pub name: String,
    #[graphql(default = 0)]
    pub credits: Option<i32>,
}

#[Object]
impl Mutation {
    /// Admin token only: creates an account and its first API key.
    async fn create_account(
        &self,
        ctx: &Context<'_>,
        input: CreateAccountInput,
    ) -> AppResult<CreateAccountPayload> {
        super::principal(ctx).require_admin()?;
        let created = accounts::create_account(
            super::db(ctx),
            &input.name,
            input.credits.unwrap_or(0).into(),
        )
        .await?;
        Ok(CreateAccountPayload {
            account: Account(created.account),
            api_key: created.key,
        })
    }

    /// Admin token only: adds credits to an account's pool.
    async fn grant_credits(
        &self,
        ctx: &Context<'_>,
        account_id: ID,
        amount: i32,
        note: Option<String>,
    ) -> AppResult<CreditBalance> {
        super::principal(ctx).require_admin()?;
        let account_id = ids::decode(ids::Kind::Account, &account_id)?;
        let account = accounts::grant_credits(super::db(ctx), account_id, amount.into()).await?;
        tracing::info!(account.id = %account_id, amount, note = note.as_deref(), "credits granted");
        Ok(CreditBalance::of(&account))
    }

    async fn create_api_key(
        &self,
        ctx: &Context<'_>,
        name: String,
    ) -> AppResult<CreateApiKeyPayload> {
        let account_id = super::account_id(ctx)?;
        let (api_key, key) = accounts::create_api_key(super::db(ctx), account_id, &name).await?;
        Ok(CreateApiKeyPayload {
            api_key: ApiKey(api_key),
            key,
        })
    }

    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> AppResult<ApiKey> {
        let account_id = super::account_id(ctx)?;
        let id = ids::decode(ids::Kind::ApiKey, &id)?;
        let key = accounts::revoke_api_key(super::db(ctx), account_id, id).await?;
        super::forget_cached_tokens(ctx);
        Ok(ApiKey(key))
    }

    async fn create_customer(
        &self,
        ctx: &Context<'_>,
        input: CreateCustomerInput,
    ) -> AppResult<Customer> {
        let account_id = super::account_id(ctx)?;
        let new = NewCustomer {
            name: input.name,
            external_id: input.external_id,
        };
        Ok(Customer(
            customers::create(super::db(ctx), account_id, new).await?,
        ))
    }

    async fn update_customer(
        &self,
        ctx: &Context<'_>,
        input: UpdateCustomerInput,
    ) -> AppResult<Customer> {
        let account_id = super::account_id(ctx)?;
        let id = customer_id(&input.id)?;
        let external_id = match input.external_id {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(v) => Some(Some(v)),
        };
        let changes = CustomerChanges {
            name: input.name,
            external_id,
        };
        Ok(Customer(
            customers::update(super::db(ctx), account_id, id, changes).await?,
        ))
    }

    /// Deletes a customer; returns its id.
    async fn delete_customer(&self, ctx: &Context<'_>, id: ID) -> AppResult<ID> {
        let account_id = super::account_id(ctx)?;
        customers::delete(super::db(ctx), account_id, customer_id(&id)?).await?;
        Ok(id)
    }
}

fn customer_id(id: &ID) -> AppResult<Uuid> {
    ids::decode(ids::Kind::Customer, id)
}
