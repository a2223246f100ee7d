//! OAuth2 clients (client credentials grant: the secret's SHA-256 only, the account tokens act
//! for, the scopes they may ask) and the Ed25519 keys that sign integration tokens (which one
//! signs, until when each verifies).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError, on_pool, on_writer};
use crate::domain::{MerchantId, Role, Scopes, UserId};

/// An OAuth client as stored (its secret only as a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthClient {
    pub client_id: String,
    pub name: String,
    /// SHA-256 of the secret, lowercase hex.
    pub secret_hash: String,
    pub scopes: Scopes,
    /// The account its tokens act for.
    pub user_id: UserId,
    /// Only this merchant's resources, when set (`user_id` is then the merchant's owner).
    pub merchant_id: Option<MerchantId>,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The account a new client's tokens act for.
#[derive(Debug, Clone)]
pub enum ClientAccount {
    /// An existing account (a merchant's owner).
    Existing(UserId),
    /// A service account made for the client in the same transaction: a customer with an
    /// address on the reserved `.invalid` domain and a password hash no password matches.
    Service { id: UserId, email: String },
}

/// What it takes to register a client.
#[derive(Debug, Clone)]
pub struct NewOauthClient<'a> {
    pub client_id: &'a str,
    pub name: &'a str,
    pub secret_hash: &'a str,
    pub scopes: Scopes,
    pub account: ClientAccount,
    pub merchant_id: Option<MerchantId>,
    pub created_by: UserId,
}

#[derive(sqlx::FromRow)]
struct ClientRow {
    client_id: String,
    name: String,
    secret_hash: String,
    scopes: String,
    user_id: Uuid,
    merchant_id: Option<Uuid>,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<ClientRow> for OauthClient {
    type Error = StoreError;

    fn try_from(row: ClientRow) -> Result<Self, StoreError> {
        let scopes = Scopes::parse_space_separated(&row.scopes)
            .map_err(|e| StoreError::Corrupt(format!("oauth client {}: {e}", row.client_id)))?;
        Ok(OauthClient {
            client_id: row.client_id,
            name: row.name,
            secret_hash: row.secret_hash,
            scopes,
            user_id: UserId(row.user_id),
            merchant_id: row.merchant_id.map(MerchantId),
            created_by: UserId(row.created_by),
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, scopes, user_id, merchant_id, \
    created_by, created_at, revoked_at";

/// A signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSigningKey {
    pub kid: String,
    /// `EdDSA`.
    pub alg: String,
    /// The PKCS#8 DER of the private key.
    pub private_der: Vec<u8>,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    pub created_at: DateTime<Utc>,
    /// When it stopped signing; `None` while it may sign.
    pub retired_at: Option<DateTime<Utc>>,
    /// When its last token expires: it verifies until then.
    pub verify_until: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    kid: String,
    alg: String,
    private_der: Vec<u8>,
    public_jwk: String,
    created_at: DateTime<Utc>,
    retired_at: Option<DateTime<Utc>>,
    verify_until: Option<DateTime<Utc>>,
}

impl From<KeyRow> for StoredSigningKey {
    fn from(row: KeyRow) -> Self {
        StoredSigningKey {
            kid: row.kid,
            alg: row.alg,
            private_der: row.private_der,
            public_jwk: row.public_jwk,
            created_at: row.created_at,
            retired_at: row.retired_at,
            verify_until: row.verify_until,
        }
    }
}

impl Store {
    /// Registers a client (and its service account, when it gets one) in one transaction.
    pub async fn create_oauth_client(
        &self,
        new: &NewOauthClient<'_>,
    ) -> Result<OauthClient, StoreError> {
        let now = super::now();
        let user_id = match &new.account {
            ClientAccount::Existing(id) | ClientAccount::Service { id, .. } => *id,
        };
        let scopes = new.scopes.to_space_separated();
        let row: ClientRow = on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            if let ClientAccount::Service { id, email } = &new.account {
                // '!' is no PHC string: no password matches it (as for WhatsApp customers).
                sqlx::query(
                    "INSERT INTO users (id, email, name, role, password_hash, created_at) \
                     VALUES ($1, $2, $3, $4, '!', $5)",
                )
                .bind(id.as_uuid())
                .bind(email)
                .bind(new.name)
                .bind(Role::Customer.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "INSERT INTO oauth_clients (client_id, name, secret_hash, scopes, user_id, \
                   merchant_id, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 RETURNING {CLIENT_COLUMNS}"
            )))
            .bind(new.client_id)
            .bind(new.name)
            .bind(new.secret_hash)
            .bind(&scopes)
            .bind(user_id.as_uuid())
            .bind(new.merchant_id.map(|m| m.as_uuid()))
            .bind(new.created_by.as_uuid())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            row
        });
        OauthClient::try_from(row)
    }

    /// The client with this id, revoked or not.
    pub async fn oauth_client(&self, client_id: &str) -> Result<Option<OauthClient>, StoreError> {
        let row: Option<ClientRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1"
            )))
            .bind(client_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(OauthClient::try_from).transpose()
    }

    /// Every client, revoked ones too, oldest first.
    pub async fn oauth_clients(&self) -> Result<Vec<OauthClient>, StoreError> {
        let rows: Vec<ClientRow> = on_pool!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY created_at, client_id"
            )))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(OauthClient::try_from).collect()
    }

    /// Revokes a client at `at`. `None` when there is no such client; a client revoked before
    /// keeps its first revocation time.
    pub async fn revoke_oauth_client(
        &self,
        client_id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<OauthClient>, StoreError> {
        let row: Option<ClientRow> = on_writer!(self, |pool| {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE oauth_clients SET revoked_at = COALESCE(revoked_at, $1) \
                 WHERE client_id = $2 RETURNING {CLIENT_COLUMNS}"
            )))
            .bind(at)
            .bind(client_id)
            .fetch_optional(pool)
            .await?
        });
        row.map(OauthClient::try_from).transpose()
    }

    /// Every signing key, newest first (the first not retired signs).
    pub async fn signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows: Vec<KeyRow> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT kid, alg, private_der, public_jwk, created_at, retired_at, verify_until \
                 FROM signing_keys ORDER BY created_at DESC, kid DESC",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(StoredSigningKey::from).collect())
    }

    /// Adds the very first key, unless a key that may sign exists already (another replica
    /// won). Two replicas starting at once may both add one: [`Store::retire_signing_keys_except`]
    /// then retires all but the newest, so they agree.
    pub async fn add_first_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        on_writer!(self, |pool| {
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, private_der, public_jwk, created_at) \
                 SELECT $1, $2, $3, $4, $5 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_keys WHERE retired_at IS NULL)",
            )
            .bind(&key.kid)
            .bind(&key.alg)
            .bind(&key.private_der)
            .bind(&key.public_jwk)
            .bind(key.created_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Retires every key that may sign except `kid`: they verify until `verify_until`.
    /// Returns how many were retired.
    pub async fn retire_signing_keys_except(
        &self,
        kid: &str,
        at: DateTime<Utc>,
        verify_until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let retired = on_writer!(self, |pool| {
            sqlx::query(
                "UPDATE signing_keys SET retired_at = $1, verify_until = $2 \
                 WHERE retired_at IS NULL AND kid <> $3",
            )
            .bind(at)
            .bind(verify_until)
            .bind(kid)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(retired)
    }

    /// Deletes retired keys that stopped verifying before `before`. Returns how many.
    pub async fn purge_signing_keys(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let purged = on_writer!(self, |pool| {
            sqlx::query(
                "DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND verify_until < $1",
            )
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(purged)
    }

    /// Replaces the signing key `current` with `new` in one transaction: `current` is retired
    /// (verifying until `verify_until`) and `new` signs. `false`, with nothing written, when
    /// `current` no longer signs (another replica rotated it first).
    pub async fn rotate_signing_key(
        &self,
        current: &str,
        new: &StoredSigningKey,
        verify_until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        on_writer!(self, |pool| {
            let mut tx = pool.begin().await?;
            // The row lock this takes on PostgreSQL makes a racing rotation wait, then find
            // the key retired and give up.
            let retired = sqlx::query(
                "UPDATE signing_keys SET retired_at = $1, verify_until = $2 \
                 WHERE kid = $3 AND retired_at IS NULL",
            )
            .bind(new.created_at)
            .bind(verify_until)
            .bind(current)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if retired == 0 {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, private_der, public_jwk, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&new.kid)
            .bind(&new.alg)
            .bind(&new.private_der)
            .bind(&new.public_jwk)
            .bind(new.created_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::sqlite_store;
    use super::*;
    use crate::domain::Scope;
    use crate::store::NewUser;

    fn key(kid: &str, created_at: DateTime<Utc>) -> StoredSigningKey {
        StoredSigningKey {
            kid: kid.to_owned(),
            alg: "EdDSA".to_owned(),
            private_der: vec![1, 2, 3],
            public_jwk: "{}".to_owned(),
            created_at,
            retired_at: None,
            verify_until: None,
        }
    }

    #[tokio::test]
    async fn a_client_with_a_service_account_round_trips_and_revocation_keeps_its_first_time() {
        let (store, dir) = sqlite_store();
        store.migrate().await.unwrap();
        let admin = store
            .create_user(NewUser {
                email: crate::domain::Email::parse("admin@example.com").unwrap(),
                name: "Admin".into(),
                role: Role::Admin,
                password_hash: "x".into(),
            })
            .await
            .unwrap();
        let service = UserId::new();
        let scopes: Scopes = [Scope::OrdersRead].into_iter().collect();
        let created = store
            .create_oauth_client(&NewOauthClient {
                client_id: "mkc_test",
                name: "Partner",
                secret_hash: "ab",
                scopes,
                account: ClientAccount::Service {
                    id: service,
                    email: "client+mkc_test@clients.mealkitz.invalid".into(),
                },
                merchant_id: None,
                created_by: admin.id,
            })
            .await
            .unwrap();
        assert_eq!(created.scopes, scopes);
        assert_eq!(created.user_id, service);
        let account = store.user_by_id(service).await.unwrap().unwrap();
        assert_eq!(
            (account.role, account.name.as_str()),
            (Role::Customer, "Partner")
        );
        assert_eq!(
            store.oauth_client("mkc_test").await.unwrap(),
            Some(created.clone())
        );
        assert_eq!(store.oauth_clients().await.unwrap(), vec![created]);
        let first = super::super::now();
        let revoked = store.revoke_oauth_client("mkc_test", first).await.unwrap();
        assert_eq!(revoked.unwrap().revoked_at, Some(first));
        let later = first + chrono::Duration::seconds(5);
        let again = store.revoke_oauth_client("mkc_test", later).await.unwrap();
        assert_eq!(again.unwrap().revoked_at, Some(first));
        assert!(
            store
                .revoke_oauth_client("nope", later)
                .await
                .unwrap()
                .is_none()
        );
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn only_one_first_key_is_added_and_a_rotation_happens_once() {
        let (store, dir) = sqlite_store();
        store.migrate().await.unwrap();
        let t0 = super::super::now();
        store.add_first_signing_key(&key("a", t0)).await.unwrap();
        store.add_first_signing_key(&key("b", t0)).await.unwrap();
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        let t1 = t0 + chrono::Duration::seconds(1);
        let until = t1 + chrono::Duration::seconds(60);
        assert!(
            store
                .rotate_signing_key("a", &key("c", t1), until)
                .await
                .unwrap()
        );
        assert!(
            !store
                .rotate_signing_key("a", &key("d", t1), until)
                .await
                .unwrap()
        );
        let keys = store.signing_keys().await.unwrap();
        assert_eq!(
            keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            ["c", "a"]
        );
        assert_eq!(keys[1].verify_until, Some(until));
        assert_eq!(keys[1].retired_at, Some(t1));
        assert_eq!(keys[0].retired_at, None);
        store.close().await;
        std::fs::remove_dir_all(dir).unwrap();
    }
}
