use serde_json::json;

use crate::on_every_bus;

on_every_bus! {
    async fn the_process_is_live_and_ready(app) {
        assert_eq!(app.get_json("/health/live").await, json!({ "status": "ok" }));
        assert_eq!(
            app.get_json("/health/ready").await,
            json!({ "status": "ready", "auth": "off" })
        );
    }

    async fn the_openapi_document_describes_every_route(app) {
        let doc = app.get_json("/openapi.json").await;
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, method) in [
            ("/user", "put"), ("/users/{id}", "get"), ("/book", "put"), ("/books", "get"),
            ("/books/{id}", "get"), ("/offer", "post"), ("/offers/{bookId}", "get"),
            ("/order", "post"), ("/orders/{id}", "get"), ("/health/live", "get"), ("/health/ready", "get"),
        ] {
            assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} documented");
        }
        let offer = &doc["components"]["schemas"]["CreateOffer"];
        assert_eq!(offer["required"], json!(["id", "bookId", "sellerId", "price", "stock"]));
    }

    async fn every_operation_documents_the_answers_any_route_may_give(app) {
        let doc = app.get_json("/openapi.json").await;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                let documents = |status: &str| responses.get(status).is_some();
                assert!(documents("401"), "{method} {path}: a refused token");
                if !path.starts_with("/health/") {
                    assert!(documents("429"), "{method} {path}: the rate limit");
                }
                if path != "/health/live" {
                    assert!(documents("503"), "{method} {path}: load shedding, timeout");
                }
            }
        }
        for (path, method) in [("/user", "put"), ("/book", "put"), ("/offer", "post"), ("/order", "post")] {
            assert!(doc["paths"][path][method]["responses"].get("413").is_some(), "{method} {path}: 413");
        }
    }
}
