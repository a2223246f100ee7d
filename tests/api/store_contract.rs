//! The storage contract: the same cases run against PostgreSQL and SQLite, directly on
//! [`Store`], so both backends are held to one behaviour.

use mealkitz::domain::{Email, Role, UserId};
use mealkitz::store::{Store, StoreError};

use crate::helpers::{Db, TestDb, migrated_store, new_user};

crate::helpers::each_backend! {
    operations_before_migration_are_unavailable => before_migration;
    migrating_twice_is_harmless => migrate_twice;
    a_created_user_reads_back_by_id_and_email => create_and_read;
    a_second_user_with_the_same_email_is_a_duplicate => duplicate_email;
    unknown_users_read_as_none => unknown_users;
    the_first_stored_setting_wins => first_setting_wins;
    eta_corrections_are_saved_over_and_read_back => eta_corrections_round_trip;
}

async fn before_migration(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = Store::open(&db.config()).unwrap();
    assert!(!store.is_migrated());
    let error = store.user_by_id(UserId::new()).await.unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

async fn migrate_twice(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    store
        .migrate()
        .await
        .expect("second migration run is a no-op");
    store.ping().await.expect("ping after migration");
}

async fn create_and_read(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    let created = store
        .create_user(new_user("Reader@Example.com", Role::Merchant))
        .await
        .unwrap();
    assert_eq!(created.email, "reader@example.com");
    assert_eq!(created.role, Role::Merchant);

    let by_id = store
        .user_by_id(created.id)
        .await
        .unwrap()
        .expect("found by id");
    assert_eq!(by_id, created);
    let by_email = store
        .user_by_email(&Email::parse("reader@example.com").unwrap())
        .await
        .unwrap()
        .expect("found by email");
    assert_eq!(by_email.user, created);
    assert!(by_email.password_hash.starts_with("$argon2id$"));
}

async fn duplicate_email(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    store
        .create_user(new_user("twice@example.com", Role::Customer))
        .await
        .unwrap();
    let error = store
        .create_user(new_user("twice@example.com", Role::Driver))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Duplicate(_)), "{error:?}");
}

async fn unknown_users(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    assert!(store.user_by_id(UserId::new()).await.unwrap().is_none());
    let email = Email::parse("ghost@example.com").unwrap();
    assert!(store.user_by_email(&email).await.unwrap().is_none());
}

async fn first_setting_wins(kind: Db) {
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    assert_eq!(
        store.setting_or_insert("k", "first").await.unwrap(),
        "first"
    );
    assert_eq!(
        store.setting_or_insert("k", "second").await.unwrap(),
        "first"
    );
    assert_eq!(store.setting_or_insert("other", "x").await.unwrap(), "x");
}

async fn eta_corrections_round_trip(kind: Db) {
    use mealkitz::maps::corrections::Correction;
    let db = TestDb::create(kind).await;
    let store = migrated_store(&db).await;
    assert!(store.eta_corrections().await.unwrap().is_empty());
    let first = vec![
        (
            "west".to_owned(),
            12,
            Correction {
                factor: 1.25,
                samples: 3,
            },
        ),
        (
            "east".to_owned(),
            0,
            Correction {
                factor: 0.75,
                samples: 1,
            },
        ),
    ];
    store.save_eta_corrections(&first).await.unwrap();
    // Saved again: the row is replaced, not duplicated.
    let again = vec![(
        "west".to_owned(),
        12,
        Correction {
            factor: 1.5,
            samples: 4,
        },
    )];
    store.save_eta_corrections(&again).await.unwrap();
    let mut read = store.eta_corrections().await.unwrap();
    read.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        read,
        vec![
            (
                "east".to_owned(),
                0,
                Correction {
                    factor: 0.75,
                    samples: 1
                }
            ),
            (
                "west".to_owned(),
                12,
                Correction {
                    factor: 1.5,
                    samples: 4
                }
            ),
        ]
    );
}
