//! Names, titles and authors: refused with 422 when they hold control
//! characters or bidirectional overrides, trimmed, and counted in
//! characters as the databases count them.

use serde_json::json;
use uuid::Uuid;

use crate::{helpers::assert_problem, on_every_bus};

on_every_bus! {
    async fn a_nul_a_bidi_override_or_a_control_character_is_refused_with_422_naming_the_field(app) {
        let id = Uuid::new_v4();
        for bad in ["Ann\0", "Ann\u{202E}nnA", "An\u{2066}n", "Ann\u{7}", "An\nn", "An\u{85}n"] {
            let problem = assert_problem(app.put_user(id, bad).await, 422).await;
            assert_eq!(problem["field"], "name", "{bad:?}: {problem}");
            let book = json!({ "id": id, "title": "Dune", "author": bad });
            let problem = assert_problem(app.put("/book", &book).await, 422).await;
            assert_eq!(problem["field"], "author", "{bad:?}: {problem}");
            let book = json!({ "id": id, "title": bad, "author": "Frank Herbert" });
            let problem = assert_problem(app.put("/book", &book).await, 422).await;
            assert_eq!(problem["field"], "title", "{bad:?}: {problem}");
        }
        assert_problem(app.get(&format!("/users/{id}")).await, 404).await;
        assert_problem(app.get(&format!("/books/{id}")).await, 404).await;
    }

    async fn names_are_stored_trimmed_and_a_name_of_spaces_only_is_empty(app) {
        let (user, book) = (Uuid::new_v4(), Uuid::new_v4());
        let problem = assert_problem(app.put_user(user, "   \t ").await, 422).await;
        assert_eq!(problem["field"], "name");
        assert_eq!(app.put_user(user, "  Ann Lee \t").await.status(), 200);
        let book_body = json!({ "id": book, "title": " Dune ", "author": "\u{3000}Frank Herbert " });
        assert_eq!(app.put("/book", &book_body).await.status(), 200);
        app.eventually(|| async {
            let response = app.get(&format!("/users/{user}")).await;
            (response.status() == 200).then_some(())
        })
        .await;
        assert_eq!(app.get_json(&format!("/users/{user}")).await["name"], "Ann Lee");
        let stored = app
            .eventually(|| async {
                let response = app.get(&format!("/books/{book}")).await;
                (response.status() == 200).then_some(response.json::<serde_json::Value>().await.ok()?)
            })
            .await;
        assert_eq!((stored["title"].as_str(), stored["author"].as_str()), (Some("Dune"), Some("Frank Herbert")));
    }

    async fn a_name_of_50_multibyte_characters_is_accepted_and_51_are_refused(app) {
        let id = Uuid::new_v4();
        // 50 characters, 150 bytes in UTF-8 (and one 4-byte character).
        let name = format!("{}😀", "李".repeat(49));
        assert_eq!(name.chars().count(), 50);
        assert_eq!(app.put_user(id, &name).await.status(), 200);
        let stored = app
            .eventually(|| async {
                let response = app.get(&format!("/users/{id}")).await;
                (response.status() == 200).then_some(response.json::<serde_json::Value>().await.ok()?)
            })
            .await;
        assert_eq!(stored["name"], name.as_str());
        let problem = assert_problem(app.put_user(id, &format!("{name}李")).await, 422).await;
        assert_eq!(problem["field"], "name");
    }
}
