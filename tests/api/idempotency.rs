//! `Idempotency-Key` on creating POSTs: replay, mismatch (422), in flight (409), per-caller scope.

use serde_json::json;

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

fn same_key_same_body_replays_the_stored_response(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner) = app.tenant(&op, false);
    let acct = app.account(&owner, "A");
    let create = |body: serde_json::Value| {
        app.post("/api/v1/keys")
            .bearer(&owner.token)
            .header("Idempotency-Key", "\"key-create-1\"")
            .json(body)
    };
    let first = create(json!({"name": "k", "account_id": acct})).expect(201, "");
    let again = create(json!({"name": "k", "account_id": acct})).expect(201, "");
    assert_eq!(
        first.body, again.body,
        "the stored response, secret included, is replayed"
    );
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert!(first.header("idempotent-replayed").is_none());
    assert_eq!(app.count("api_keys"), 1, "the retry created nothing");
    // The replayed secret works: it is the one key.
    app.get("/v1/models")
        .bearer(first.body["secret"].as_str().unwrap())
        .send()
        .expect(200, "");
    // The stored record does not hold the secret in clear.
    use diesel::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        response_body: String,
    }
    let mut conn = app.db.get().unwrap();
    let rows: Vec<Row> = diesel::sql_query("SELECT response_body FROM idempotency_records")
        .load(&mut *conn)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(
        !rows[0]
            .response_body
            .contains(first.body["secret"].as_str().unwrap())
    );
    assert!(!rows[0].response_body.contains("key-create-1"));

    let other = create(json!({"name": "different", "account_id": acct}))
        .expect(422, "idempotency_key_reused");
    assert!(
        other.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("different request")
    );
    assert_eq!(app.count("api_keys"), 1);
}

fn keys_are_scoped_to_the_caller_and_errors_replay_too(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, _, owner_a) = app.tenant(&op, false);
    let (_, _, owner_b) = app.tenant(&op, false);
    let a = app
        .post("/api/v1/accounts")
        .bearer(&owner_a.token)
        .header("Idempotency-Key", "shared")
        .json(json!({"name": "n"}))
        .expect(201, "");
    let b2 = app
        .post("/api/v1/accounts")
        .bearer(&owner_b.token)
        .header("Idempotency-Key", "shared")
        .json(json!({"name": "n"}))
        .expect(201, "");
    assert_ne!(
        a.body["id"], b2.body["id"],
        "another caller's key space is separate"
    );
    // A 4xx is stored and replayed like a success.
    let bad = json!({"name": "x", "account_id": "00000000-0000-7000-8000-000000000000"});
    app.post("/api/v1/keys")
        .bearer(&owner_a.token)
        .header("Idempotency-Key", "k404")
        .json(bad.clone())
        .expect(404, "not_found");
    let replay = app
        .post("/api/v1/keys")
        .bearer(&owner_a.token)
        .header("Idempotency-Key", "k404")
        .json(bad)
        .expect(404, "not_found");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    app.post("/api/v1/accounts")
        .bearer(&owner_a.token)
        .header("Idempotency-Key", "")
        .json(json!({"name": "n"}))
        .expect(400, "invalid_idempotency_key");
    app.post("/api/v1/accounts")
        .bearer(&owner_a.token)
        .header("Idempotency-Key", &"x".repeat(300))
        .json(json!({"name": "n"}))
        .expect(400, "invalid_idempotency_key");
}

fn a_request_still_in_flight_gets_409(b: Backend) {
    let app = TestApp::spawn(b);
    let op = app.operator();
    let (_, slug, owner) = app.tenant(&op, false);
    // Creating a user hashes a password (tens of ms), long enough to overlap a duplicate; repeat
    // until the overlap happens, then check that exactly one user was created per key.
    let mut saw_conflict = false;
    let mut rounds = 0;
    for round in 0..10 {
        rounds += 1;
        let key = format!("slow-{round}");
        let body = json!({"email": format!("u{round}@{slug}.example.com"), "password": "a long enough password", "role": "finance"});
        let (r1, r2) = std::thread::scope(|s| {
            let t1 = s.spawn(|| {
                app.post("/api/v1/users")
                    .bearer(&owner.token)
                    .header("Idempotency-Key", &key)
                    .json(body.clone())
            });
            let t2 = s.spawn(|| {
                app.post("/api/v1/users")
                    .bearer(&owner.token)
                    .header("Idempotency-Key", &key)
                    .json(body.clone())
            });
            (t1.join().unwrap(), t2.join().unwrap())
        });
        let mut statuses = [r1.status, r2.status];
        statuses.sort();
        assert!(
            statuses == [201, 201] || statuses == [201, 409],
            "got {statuses:?}"
        );
        if statuses == [201, 409] {
            let conflict = if r1.status == 409 { r1 } else { r2 };
            conflict.expect(409, "idempotency_key_in_flight");
            saw_conflict = true;
            break;
        }
    }
    assert!(saw_conflict, "no overlapping duplicate in 10 rounds");
    // The owner plus one user per round; the duplicates created nothing and audited nothing.
    assert_eq!(
        app.count("users"),
        2 + rounds,
        "operator + owner + one per round"
    );
    let creates = app
        .get("/api/v1/audit-log")
        .bearer(&owner.token)
        .send()
        .ok()["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "user.create")
        .count() as i64;
    assert_eq!(creates, 1 + rounds);
}

both_backends!(
    same_key_same_body_replays_the_stored_response,
    keys_are_scoped_to_the_caller_and_errors_replay_too,
    a_request_still_in_flight_gets_409,
);
