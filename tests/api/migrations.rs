//! Every migration runs up, down and up again on both backends.

use taogate::db::{Db, migrations};

use crate::both_backends;
use crate::helpers::{Backend, TestDb};

fn migrations_run_up_down_up(b: Backend) {
    let test_db = TestDb::empty(b);
    let db = Db::connect(&test_db.url, 2).unwrap();
    assert!(migrations::has_pending(&db).unwrap());
    let up = migrations::run_pending(&db).unwrap();
    assert!(!up.is_empty());
    assert!(!migrations::has_pending(&db).unwrap());
    let down = migrations::revert_all(&db).unwrap();
    assert_eq!(down.len(), up.len(), "every migration reverts");
    assert!(migrations::has_pending(&db).unwrap());
    let again = migrations::run_pending(&db).unwrap();
    assert_eq!(again, up, "and applies again after reverting");
    drop(db);
}

both_backends!(migrations_run_up_down_up);
