use async_graphql::{Request, Variables};
use serde_json::json;

use super::*;
use crate::config::Config;

fn cost_of(query: &str, variables: serde_json::Value) -> Price {
    let mut request = Request::new(query).variables(Variables::from_json(variables));
    price(&mut request, &Config::default().http)
}

fn requested(query: &str) -> u64 {
    let price = cost_of(query, json!({}));
    assert!(
        price.refusal.is_none() || price.requested.is_some(),
        "{price:?}"
    );
    price
        .requested
        .unwrap_or_else(|| panic!("not priced: {query}"))
}

#[test]
fn every_list_of_objects_is_paged_or_capped() {
    assert_eq!(MODEL.uncapped(), Vec::<String>::new());
}

#[test]
fn objects_count_one_and_lists_multiply() {
    assert_eq!(requested("{ viewer { account { name } } }"), 2);
    assert_eq!(requested("{ customers(first: 10) { nodes { id } } }"), 10);
    // The default page size, and a page past the maximum priced as the maximum.
    assert_eq!(requested("{ customers { nodes { id } } }"), 50);
    assert_eq!(
        requested("{ customers(first: 1000) { nodes { id } } }"),
        100
    );
    // 100 customers and 100 connections of each.
    assert_eq!(
        requested(
            "{ customers(first: 100) { nodes { connections(first: 100) { nodes { id } } } } }"
        ),
        10_100
    );
    // The example of docs/queries.md.
    assert_eq!(
        requested(
            "{ customers(first: 100) { nodes { connections(first: 100) { nodes { customer { connections(first: 100) { nodes { id } } } } } } } }"
        ),
        1_020_100
    );
    // Edges, nodes and pageInfo are one page of customers.
    assert_eq!(
        requested(
            "{ customers(first: 5) { edges { cursor node { id } } nodes { name } pageInfo { hasNextPage } } }"
        ),
        5
    );
    // An unpaged list of objects by its cap: 5 systems with at most their credential fields.
    let systems = crate::catalog::SYSTEMS.len() as u64;
    assert_eq!(requested("{ systems { key } }"), systems);
    let fields = requested("{ systems { credentialFields { name } } }");
    assert!(fields > systems * 2, "{fields}");
    // `last` counts as `first` does; `apiKeys` defaults to 100.
    assert_eq!(requested("{ events(last: 7) { nodes { id } } }"), 7);
    assert_eq!(requested("{ viewer { account { apiKeys { id } } } }"), 102);
}

#[test]
fn variables_fragments_aliases_and_directives() {
    let query = "query($n: Int, $m: Int = 3) { customers(first: $n) { ...C } }
        fragment C on CustomerConnection { nodes { connections(first: $m) { nodes { id } } } }";
    assert_eq!(
        cost_of(query, json!({ "n": 4 })).requested,
        Some(4 * (1 + 3))
    );
    assert_eq!(
        cost_of(query, json!({ "n": 4, "m": 10 })).requested,
        Some(4 * 11)
    );
    // Aliases are fields of their own; the same field twice is one.
    assert_eq!(
        requested(
            "{ a: customers(first: 2) { nodes { id } } b: customers(first: 3) { nodes { id } } }"
        ),
        5
    );
    assert_eq!(
        requested(
            "{ customers(first: 2) { nodes { id } } customers(first: 2) { nodes { name } } }"
        ),
        2
    );
    let skipped = "query($s: Boolean!) { viewer { account @skip(if: $s) { name } } }";
    assert_eq!(cost_of(skipped, json!({ "s": true })).requested, Some(1));
    assert_eq!(cost_of(skipped, json!({ "s": false })).requested, Some(2));
    assert_eq!(
        requested("{ viewer { ... @include(if: false) { account { name } } } }"),
        1
    );
}

#[test]
fn an_interface_costs_its_dearest_object_type() {
    let query = "{ node(id: \"x\") { id
        ... on Customer { connections(first: 10) { nodes { id } } }
        ... on Account { credits { total } } } }";
    assert_eq!(requested(query), 1 + 10);
    let records = "{ records(connectionId: \"c\", entity: ASSET, first: 10) { nodes {
        ... on Asset { site { name } parent { name } } ... on WorkOrder { asset { name } } } } }";
    assert_eq!(requested(records), 10 * (1 + 2));
}

#[test]
fn subscriptions_are_priced_per_event() {
    let price = cost_of(
        "subscription { connectionStatus { customer { connections(first: 100) { nodes { customer { connections(first: 100) { nodes { id } } } } } } } }",
        json!({}),
    );
    assert!(price.is_subscription());
    assert_eq!(price.requested, Some(1 + 1 + 100 * (1 + 1 + 100)));
    assert!(price.refusal.is_some());
}

#[test]
fn hostile_documents_end_the_walk() {
    // A cycle of fragments through fields ends at the depth limit.
    let cycle = "{ customers { nodes { ...A } } }
        fragment A on Customer { connections { nodes { customer { ...A } } } }";
    let price = cost_of(cycle, json!({}));
    assert!(
        price.requested.is_none() && price.refusal.is_some(),
        "{price:?}"
    );
    // Fragments spread twice at each level are collected once.
    let mut fragments = String::new();
    for i in 0..40 {
        fragments.push_str(&format!(
            "fragment F{i} on Query {{ ...F{} ...F{} }} ",
            i + 1,
            i + 1
        ));
    }
    let query = format!(
        "{{ ...F0 }} {fragments} fragment F40 on Query {{ viewer {{ account {{ id }} }} }}"
    );
    assert_eq!(requested(&query), 2);
    // Unparsable documents and unknown operations are left to execution.
    assert!(cost_of("{ viewer", json!({})).requested.is_none());
    assert!(cost_of("{ viewer", json!({})).refusal.is_none());
}
