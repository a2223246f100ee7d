//! Holds the service to its OpenAPI document: every response a test sees through the helpers
//! is checked against the documented statuses and schemas, and every registered route is in
//! the document.

use serde_json::Value;

use crate::helpers::{Db, spawn_app};

/// Finds the documented operation for `method` and a concrete `path`.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<(&'a str, &'a Value)> {
    let path = path.split('?').next().unwrap_or(path);
    let method = method.to_ascii_lowercase();
    doc["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let matches = template.split('/').count() == path.split('/').count()
                && template.split('/').zip(path.split('/')).all(|(t, p)| {
                    (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p
                });
            if matches {
                item.get(&method).map(|op| (template.as_str(), op))
            } else {
                None
            }
        })
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn type_matches(kind: &str, value: &Value) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    }
}

/// Checks `value` against `schema`; the first problem found, with its path.
pub fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(one_of) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        return if one_of.iter().any(|s| validate(doc, s, value, at).is_ok()) {
            Ok(())
        } else {
            Err(format!("{at}: matches none of oneOf/anyOf: {value}"))
        };
    }
    if let Some(all_of) = schema.get("allOf").and_then(Value::as_array) {
        for s in all_of {
            validate(doc, s, value, at)?;
        }
    }
    match schema.get("type") {
        Some(Value::String(kind)) if !type_matches(kind, value) => {
            return Err(format!("{at}: expected {kind}, got {value}"));
        }
        Some(Value::Array(kinds))
            if !kinds
                .iter()
                .any(|k| type_matches(k.as_str().unwrap_or(""), value)) =>
        {
            return Err(format!("{at}: expected one of {kinds:?}, got {value}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Value::Object(object) = value {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: missing required property {name}"));
            }
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                if let Some(v) = object.get(name) {
                    validate(doc, property, v, &format!("{at}.{name}"))?;
                }
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(doc, item_schema, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Panics unless the response is documented for this operation: its status, and its JSON body
/// against the status's schema. Paths the document does not know (an unknown route) pass.
pub fn check_response(
    doc: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
    text: &str,
) {
    let Some((template, op)) = operation(doc, method, path) else {
        return;
    };
    let Some(response) = op["responses"].get(status.to_string()) else {
        panic!(
            "{method} {template} answered {status}, which the OpenAPI document does not list: {text}"
        );
    };
    if let Some(schema) = response.pointer("/content/application~1json/schema")
        && let Err(problem) = validate(doc, schema, body, "body")
    {
        panic!(
            "{method} {template} {status}: the body does not match its schema: {problem}\n{text}"
        );
    }
}

#[actix_web::test]
async fn every_registered_route_is_documented_and_every_documented_route_is_served() {
    let app = spawn_app(Db::Sqlite).await;
    let doc = app.get("/openapi.json").await.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: Vec<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "patch", "delete"].contains(&m.as_str()))
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect();
    // Every route the application registers (src/api/mod.rs), by method and pattern.
    let registered = [
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/ws/driver"),
        ("GET", "/ws/merchant"),
        ("GET", "/ws/orders/{order_id}"),
        ("POST", "/api/v1/users"),
        ("POST", "/api/v1/sessions"),
        ("GET", "/api/v1/me"),
        ("PATCH", "/api/v1/me"),
        ("POST", "/api/v1/me/whatsapp-link"),
        ("POST", "/api/v1/merchants"),
        ("GET", "/api/v1/merchants"),
        ("GET", "/api/v1/merchants/{merchant_id}"),
        ("POST", "/api/v1/merchants/{merchant_id}/open"),
        ("POST", "/api/v1/merchants/{merchant_id}/close"),
        ("PUT", "/api/v1/merchants/{merchant_id}/menu"),
        ("GET", "/api/v1/merchants/{merchant_id}/menu"),
        ("POST", "/api/v1/merchants/{merchant_id}/webhooks"),
        ("GET", "/api/v1/merchants/{merchant_id}/webhooks"),
        (
            "DELETE",
            "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}",
        ),
        (
            "POST",
            "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}/rotate-secret",
        ),
        (
            "GET",
            "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}/deliveries",
        ),
        (
            "POST",
            "/api/v1/merchants/{merchant_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
        ),
        ("POST", "/api/v1/orders"),
        ("GET", "/api/v1/orders"),
        ("GET", "/api/v1/orders/{order_id}"),
        ("GET", "/api/v1/orders/{order_id}/payment"),
        ("POST", "/api/v1/orders/{order_id}/cancel"),
        ("GET", "/api/v1/orders/{order_id}/notifications"),
        ("POST", "/api/v1/payments/webhook"),
        ("GET", "/webhooks/whatsapp"),
        ("POST", "/webhooks/whatsapp"),
        ("GET", "/api/v1/payments/attention"),
        ("POST", "/api/v1/oauth-clients"),
        ("GET", "/api/v1/oauth-clients"),
        ("DELETE", "/api/v1/oauth-clients/{client_id}"),
        ("POST", "/api/v1/signing-keys/rotate"),
        ("POST", "/oauth/token"),
        ("GET", "/.well-known/jwks.json"),
        ("GET", "/.well-known/oauth-authorization-server"),
        ("GET", "/api/v1/pay/{token}"),
        ("POST", "/api/v1/pay/{token}"),
        ("GET", "/api/v1/me/merchants"),
        ("GET", "/api/v1/regions"),
        ("GET", "/api/v1/geocode"),
        ("GET", "/api/v1/geocode/reverse"),
        ("GET", "/api/v1/map"),
        ("GET", "/api/v1/map/streets"),
        ("POST", "/api/v1/api-keys"),
        ("GET", "/api/v1/api-keys"),
        ("DELETE", "/api/v1/api-keys/{key_id}"),
        ("GET", "/api/v1/audit"),
        ("GET", "/"),
        ("GET", "/merchant"),
        ("GET", "/keys"),
        ("GET", "/order"),
        ("GET", "/track/{order_id}"),
        ("GET", "/driver"),
        ("GET", "/pay/{token}"),
        ("GET", "/assets/{name}"),
        ("GET", "/auth/oidc"),
        ("GET", "/auth/oidc/login"),
        ("GET", "/auth/oidc/callback"),
    ];
    for (method, path) in registered {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is served but not documented"
        );
        // And it really is served: the router matches it (an unmatched path is counted under
        // route="unmatched"; a wrong method answers 405).
        let concrete = path
            .replace("{order_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{merchant_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{webhook_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{delivery_id}", &uuid::Uuid::now_v7().to_string())
            .replace("{name}", "app.css")
            .replace("{token}", "not-a-real-token");
        let response = app
            .client
            .request(method.parse().unwrap(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_ne!(response.status().as_u16(), 405, "{method} {path}");
        let body = response.text().await.unwrap();
        assert!(
            !body.contains("There is nothing here."),
            "{method} {path} is not routed: {body}"
        );
    }
    for (method, path) in &documented {
        assert!(
            registered.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is documented but not in this test's list of routes"
        );
    }
    // Every error response documented uses the one error shape.
    let error_schema = &doc["components"]["schemas"]["ErrorBody"];
    assert!(error_schema.is_object(), "ErrorBody is a component");
    assert!(
        app.get("/docs/").await.status == 200,
        "Swagger UI is served"
    );
}

#[test]
fn the_checker_refuses_undocumented_statuses_and_wrong_shapes() {
    let doc = serde_json::json!({
        "paths": {"/things/{id}": {"get": {"responses": {"200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}}},
        "components": {"schemas": {"Thing": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}, "tag": {"type": ["string", "null"]}}}}}
    });
    let ok = serde_json::json!({"n": 1, "tag": null});
    check_response(&doc, "GET", "/things/7", 200, &ok, "");
    let undocumented =
        std::panic::catch_unwind(|| check_response(&doc, "GET", "/things/7", 500, &ok, ""));
    assert!(undocumented.is_err());
    let wrong = serde_json::json!({"n": "one"});
    assert!(
        validate(
            &doc,
            &doc["paths"]["/things/{id}"]["get"]["responses"]["200"]["content"]["application/json"]
                ["schema"],
            &wrong,
            "body"
        )
        .is_err()
    );
    let missing = serde_json::json!({"tag": "x"});
    assert!(
        validate(
            &doc,
            &serde_json::json!({"$ref": "#/components/schemas/Thing"}),
            &missing,
            "body"
        )
        .is_err()
    );
}
