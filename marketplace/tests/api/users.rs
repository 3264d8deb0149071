use serde_json::json;
use uuid::Uuid;

use crate::{helpers::assert_problem, on_every_bus};

on_every_bus! {
    async fn a_saved_user_can_be_read_back(app) {
        let id = Uuid::new_v4();
        let response = app.put_user(id, "Ann").await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "", "a write answers with an empty body");
        let user = app
            .eventually(|| async {
                let r = app.get(&format!("/users/{id}")).await;
                (r.status() == 200).then_some(r)
            })
            .await;
        assert_eq!(user.json::<serde_json::Value>().await.unwrap(), json!({ "id": id, "name": "Ann" }));
    }

    async fn saving_a_user_again_renames_it(app) {
        let id = Uuid::new_v4();
        app.put_user(id, "Ann").await;
        app.eventually(|| async { (app.get(&format!("/users/{id}")).await.status() == 200).then_some(()) }).await;
        assert_eq!(app.put_user(id, "Annie").await.status(), 200);
        app.eventually(|| async {
            (app.get_json(&format!("/users/{id}")).await["name"] == "Annie").then_some(())
        })
        .await;
    }

    async fn an_unknown_user_is_404(app) {
        assert_problem(app.get(&format!("/users/{}", Uuid::new_v4())).await, 404).await;
    }
}
