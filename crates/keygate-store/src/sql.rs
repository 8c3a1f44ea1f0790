//! The SQL both backends share. SQLite and PostgreSQL agree on everything keygate needs
//! (numbered `$n` parameters, `ON CONFLICT`, partial unique indexes), so the statements
//! are written once here and the [`impl_store!`] macro instantiates them for each
//! backend's concrete pool type. What differs (connection, pragmas, migrations, the
//! timestamp encoding in [`crate::ts`]) stays in `sqlite.rs` / `postgres.rs`.

/// Usage events per INSERT statement (13 parameters each: well under both backends' limits).
pub(crate) const USAGE_ROWS_PER_INSERT: usize = 128;

/// Implements [`crate::Store`] for `$store` (which has a `pool: sqlx::Pool<$db>` field
/// and inherent `backend_kind`, `migrator` and `close_pool` items).
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> $crate::Backend {
                Self::BACKEND
            }

            async fn ping(&self) -> $crate::StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn migrate(&self) -> $crate::StoreResult<()> {
                Self::migrator().run(&self.pool).await?;
                Ok(())
            }

            async fn pending_migrations(&self) -> $crate::StoreResult<Vec<String>> {
                use sqlx::migrate::Migrate;
                let mut conn = self.pool.acquire().await?;
                conn.ensure_migrations_table().await?;
                let applied = conn.list_applied_migrations().await?;
                Ok(Self::migrator()
                    .iter()
                    .filter(|m| !m.migration_type.is_down_migration())
                    .filter(|m| !applied.iter().any(|a| a.version == m.version))
                    .map(|m| format!("{} {}", m.version, m.description))
                    .collect())
            }

            fn migration_count(&self) -> usize {
                Self::migrator().iter().filter(|m| !m.migration_type.is_down_migration()).count()
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            // ---------------------------------------------------------------- meta

            async fn meta_get(&self, key: &str) -> $crate::StoreResult<Option<Vec<u8>>> {
                let row: Option<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM meta WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn meta_insert(&self, key: &str, value: &[u8], now: chrono::DateTime<chrono::Utc>) -> $crate::StoreResult<bool> {
                let done = sqlx::query("INSERT INTO meta (key, value, updated_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .bind(Ts(now))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn meta_replace(
                &self,
                key: &str,
                expected: &[u8],
                value: &[u8],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                let done = sqlx::query("UPDATE meta SET value = $1, updated_at = $2 WHERE key = $3 AND value = $4")
                    .bind(value)
                    .bind(Ts(now))
                    .bind(key)
                    .bind(expected)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            // ---------------------------------------------------------- workspaces

            async fn insert_workspace(&self, ws: &Workspace) -> $crate::StoreResult<()> {
                insert_workspace(&self.pool, ws).await
            }

            async fn workspace(&self, id: WorkspaceId) -> $crate::StoreResult<Workspace> {
                sqlx::query_as::<_, WorkspaceRow>(concat!("SELECT ", workspace_columns!(), " FROM workspaces WHERE id = $1"))
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("workspace", id))?
                    .try_into()
            }

            async fn workspaces(&self) -> $crate::StoreResult<Vec<Workspace>> {
                sqlx::query_as::<_, WorkspaceRow>(concat!("SELECT ", workspace_columns!(), " FROM workspaces ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn workspace_by_external_id(&self, external_id: &str) -> $crate::StoreResult<Option<Workspace>> {
                sqlx::query_as::<_, WorkspaceRow>(concat!("SELECT ", workspace_columns!(), " FROM workspaces WHERE external_id = $1"))
                    .bind(external_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn bump_change_epoch(&self) -> $crate::StoreResult<i64> {
                let (epoch,): (i64,) =
                    sqlx::query_as("UPDATE change_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch")
                        .fetch_one(&self.pool)
                        .await?;
                Ok(epoch)
            }

            async fn change_epoch(&self) -> $crate::StoreResult<i64> {
                let (epoch,): (i64,) = sqlx::query_as("SELECT epoch FROM change_epoch WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(epoch)
            }

            async fn settings_get(&self, key: &str) -> $crate::StoreResult<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn settings_put(&self, key: &str, value: &str, now: chrono::DateTime<chrono::Utc>) -> $crate::StoreResult<()> {
                sqlx::query(
                    "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                )
                .bind(key)
                .bind(value)
                .bind(Ts(now))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn set_workspace_status(
                &self,
                id: WorkspaceId,
                status: WorkspaceStatus,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<()> {
                let done = sqlx::query("UPDATE workspaces SET status = $1, updated_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(Ts(now))
                    .bind(id.as_uuid())
                    .execute(&self.pool)
                    .await?;
                expect_one(done.rows_affected(), "workspace", id)
            }

            // --------------------------------------------------------------- users

            async fn insert_user(&self, user: &User, password_hash: Option<&str>) -> $crate::StoreResult<()> {
                insert_user(&self.pool, user, password_hash).await
            }

            async fn user(&self, id: UserId) -> $crate::StoreResult<User> {
                let row = sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("user", id))?;
                Ok(row.into())
            }

            async fn user_by_email(&self, email: &str) -> $crate::StoreResult<Option<User>> {
                let row = sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1"))
                    .bind(email)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn user_by_external_id(&self, external_id: &str) -> $crate::StoreResult<Option<User>> {
                let row =
                    sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users WHERE external_id = $1"))
                        .bind(external_id)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(Into::into))
            }

            async fn users(&self) -> $crate::StoreResult<Vec<User>> {
                let rows = sqlx::query_as::<_, UserRow>(concat!("SELECT ", user_columns!(), " FROM users ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn update_user(&self, user: &User) -> $crate::StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE users SET email = $1, external_id = $2, tier = $3, super_admin = $4, updated_at = $5 WHERE id = $6",
                )
                .bind(&user.email)
                .bind(&user.external_id)
                .bind(&user.tier)
                .bind(user.super_admin)
                .bind(Ts(user.updated_at))
                .bind(user.id.as_uuid())
                .execute(&self.pool)
                .await?;
                expect_one(done.rows_affected(), "user", user.id)
            }

            async fn password_hash(&self, id: UserId) -> $crate::StoreResult<Option<String>> {
                let row: Option<(Option<String>,)> = sqlx::query_as("SELECT password_hash FROM users WHERE id = $1")
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|r| r.0).ok_or_else(|| StoreError::not_found("user", id))
            }

            async fn set_password_hash(&self, id: UserId, hash: &str, now: chrono::DateTime<chrono::Utc>) -> $crate::StoreResult<()> {
                let done = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                    .bind(hash)
                    .bind(Ts(now))
                    .bind(id.as_uuid())
                    .execute(&self.pool)
                    .await?;
                expect_one(done.rows_affected(), "user", id)
            }

            async fn upsert_membership(&self, m: &Membership) -> $crate::StoreResult<()> {
                sqlx::query(concat!(
                    "INSERT INTO memberships (",
                    membership_columns!(),
                    ") VALUES ($1, $2, $3, $4) ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role"
                ))
                .bind(m.workspace_id.as_uuid())
                .bind(m.user_id.as_uuid())
                .bind(m.role.as_str())
                .bind(Ts(m.created_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn membership(&self, workspace: WorkspaceId, user: UserId) -> $crate::StoreResult<Option<Membership>> {
                sqlx::query_as::<_, MembershipRow>(concat!(
                    "SELECT ",
                    membership_columns!(),
                    " FROM memberships WHERE workspace_id = $1 AND user_id = $2"
                ))
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .fetch_optional(&self.pool)
                .await?
                .map(TryInto::try_into)
                .transpose()
            }

            async fn memberships_of_user(&self, user: UserId) -> $crate::StoreResult<Vec<Membership>> {
                sqlx::query_as::<_, MembershipRow>(concat!(
                    "SELECT ",
                    membership_columns!(),
                    " FROM memberships WHERE user_id = $1 ORDER BY workspace_id"
                ))
                .bind(user.as_uuid())
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
            }

            async fn provision_user(
                &self,
                user: &User,
                password_hash: Option<&str>,
                workspace: &Workspace,
                role: Role,
            ) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                insert_workspace(&mut *tx, workspace).await?;
                insert_user(&mut *tx, user, password_hash).await?;
                sqlx::query(concat!("INSERT INTO memberships (", membership_columns!(), ") VALUES ($1, $2, $3, $4)"))
                    .bind(workspace.id.as_uuid())
                    .bind(user.id.as_uuid())
                    .bind(role.as_str())
                    .bind(Ts(user.created_at))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            // ----------------------------------------------------------- data keys

            async fn insert_data_key(&self, key: &DataKeyRecord) -> $crate::StoreResult<()> {
                sqlx::query(concat!("INSERT INTO data_keys (", data_key_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
                    .bind(key.id.as_uuid())
                    .bind(key.owner.storage_key())
                    .bind(&key.kek_id)
                    .bind(&key.wrapped)
                    .bind(key.version)
                    .bind(Ts(key.created_at))
                    .bind(Ts(key.updated_at))
                    .bind(crate::ts::opt(key.destroyed_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn data_key(&self, id: DataKeyId) -> $crate::StoreResult<DataKeyRecord> {
                sqlx::query_as::<_, DataKeyRow>(concat!("SELECT ", data_key_columns!(), " FROM data_keys WHERE id = $1"))
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("data key", id))?
                    .try_into()
            }

            async fn data_key_by_owner(&self, owner: &KeyOwner) -> $crate::StoreResult<Option<DataKeyRecord>> {
                sqlx::query_as::<_, DataKeyRow>(concat!("SELECT ", data_key_columns!(), " FROM data_keys WHERE owner = $1"))
                    .bind(owner.storage_key())
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn data_keys(&self) -> $crate::StoreResult<Vec<DataKeyRecord>> {
                sqlx::query_as::<_, DataKeyRow>(concat!("SELECT ", data_key_columns!(), " FROM data_keys ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn rewrap_data_key(
                &self,
                id: DataKeyId,
                expected_version: i64,
                kek_id: &str,
                wrapped: &[u8],
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE data_keys SET kek_id = $1, wrapped = $2, version = version + 1, updated_at = $3 \
                     WHERE id = $4 AND version = $5 AND wrapped IS NOT NULL",
                )
                .bind(kek_id)
                .bind(wrapped)
                .bind(Ts(now))
                .bind(id.as_uuid())
                .bind(expected_version)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn destroy_data_key(&self, owner: &KeyOwner, now: chrono::DateTime<chrono::Utc>) -> $crate::StoreResult<()> {
                sqlx::query(
                    "UPDATE data_keys SET wrapped = NULL, version = version + 1, destroyed_at = $1, updated_at = $1 \
                     WHERE owner = $2 AND wrapped IS NOT NULL",
                )
                .bind(Ts(now))
                .bind(owner.storage_key())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn kek_ids_in_use(&self) -> $crate::StoreResult<Vec<String>> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT DISTINCT kek_id FROM data_keys WHERE wrapped IS NOT NULL ORDER BY kek_id")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            // --------------------------------------------------------- credentials

            async fn insert_credential(&self, c: &Credential) -> $crate::StoreResult<()> {
                insert_credential(&self.pool, c).await
            }

            async fn replace_credential(&self, old: CredentialId, new: &Credential) -> $crate::StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("DELETE FROM credentials WHERE id = $1")
                    .bind(old.as_uuid())
                    .execute(&mut *tx)
                    .await?;
                expect_one(done.rows_affected(), "credential", old)?;
                insert_credential(&mut *tx, new).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn credential(&self, id: CredentialId) -> $crate::StoreResult<Credential> {
                sqlx::query_as::<_, CredentialRow>(concat!("SELECT ", credential_columns!(), " FROM credentials WHERE id = $1"))
                    .bind(id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?
                    .ok_or_else(|| StoreError::not_found("credential", id))?
                    .try_into()
            }

            async fn credentials(&self, f: &CredentialFilter) -> $crate::StoreResult<Vec<Credential>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!("SELECT ", credential_columns!(), " FROM credentials WHERE 1 = 1"));
                if let Some(scope) = f.scope {
                    q.push(" AND scope = ").push_bind(scope.as_str());
                }
                if let Some(ws) = f.workspace_id {
                    q.push(" AND workspace_id = ").push_bind(ws.as_uuid());
                }
                if let Some(user) = f.owner_user_id {
                    q.push(" AND owner_user_id = ").push_bind(user.as_uuid());
                }
                if let Some(provider) = &f.provider {
                    q.push(" AND provider = ").push_bind(provider.clone());
                }
                if let Some(status) = f.status {
                    q.push(" AND status = ").push_bind(status.as_str());
                }
                if let Some(dk) = f.data_key_id {
                    q.push(" AND data_key_id = ").push_bind(dk.as_uuid());
                }
                q.push(" ORDER BY created_at, id");
                q.build_query_as::<CredentialRow>()
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect()
            }

            async fn credential_candidates(
                &self,
                workspace: WorkspaceId,
                user: UserId,
                provider: &str,
            ) -> $crate::StoreResult<Vec<Credential>> {
                // Three selects, each on the index made for it (a single WHERE with ORs
                // leaves SQLite's planner free to scan).
                sqlx::query_as::<_, CredentialRow>(concat!(
                    "SELECT ", credential_columns!(), " FROM credentials \
                     WHERE scope = 'user' AND workspace_id = $1 AND owner_user_id = $2 AND provider = $3 \
                     UNION ALL SELECT ", credential_columns!(), " FROM credentials \
                     WHERE scope = 'workspace' AND workspace_id = $1 AND provider = $3 AND status = 'active' \
                     UNION ALL SELECT ", credential_columns!(), " FROM credentials \
                     WHERE scope = 'operator' AND provider = $3 AND status = 'active' \
                     ORDER BY created_at, id"
                ))
                .bind(workspace.as_uuid())
                .bind(user.as_uuid())
                .bind(provider)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .map(TryInto::try_into)
                .collect()
            }

            async fn update_credential(&self, c: &Credential, sealed_before: &[u8]) -> $crate::StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE credentials SET name = $1, hint = $2, model = $3, status = $4, validity = $5, \
                     validity_detail = $6, validity_checked_at = $7, operator_shared = $8, sealed = $9, data_key_id = $10, \
                     updated_at = $11, owner_key = $12 WHERE id = $13 AND sealed = $14",
                )
                .bind(&c.name)
                .bind(&c.hint)
                .bind(&c.model)
                .bind(c.status.as_str())
                .bind(c.validity.as_str())
                .bind(&c.validity_detail)
                .bind(crate::ts::opt(c.validity_checked_at))
                .bind(c.operator_shared)
                .bind(&c.sealed)
                .bind(c.data_key_id.as_uuid())
                .bind(Ts(c.updated_at))
                .bind(c.slot_key())
                .bind(c.id.as_uuid())
                .bind(sealed_before)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                let exists: Option<(i64,)> = sqlx::query_as("SELECT CAST(1 AS BIGINT) FROM credentials WHERE id = $1")
                    .bind(c.id.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?;
                Err(match exists {
                    Some(_) => StoreError::Changed { entity: "credential", id: c.id.to_string() },
                    None => StoreError::not_found("credential", c.id),
                })
            }

            async fn delete_credential(&self, id: CredentialId) -> $crate::StoreResult<()> {
                let done = sqlx::query("DELETE FROM credentials WHERE id = $1").bind(id.as_uuid()).execute(&self.pool).await?;
                expect_one(done.rows_affected(), "credential", id)
            }

            // -------------------------------------------------------------- tokens

            async fn insert_token(&self, t: &ApiToken) -> $crate::StoreResult<()> {
                sqlx::query(concat!(
                    "INSERT INTO api_tokens (",
                    token_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(t.id.as_uuid())
                .bind(&t.public_id)
                .bind(&t.secret_hash)
                .bind(t.user_id.as_uuid())
                .bind(t.workspace_id.map(|w| w.as_uuid()))
                .bind(&t.name)
                .bind(t.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
                .bind(crate::ts::opt(t.expires_at))
                .bind(Ts(t.created_at))
                .bind(crate::ts::opt(t.last_used_at))
                .bind(crate::ts::opt(t.revoked_at))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_principal(&self, public_id: &str) -> $crate::StoreResult<Option<$crate::TokenPrincipal>> {
                sqlx::query_as::<_, TokenPrincipalRow>(token_principal_select!())
                    .bind(public_id)
                    .fetch_optional(&self.pool)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn tokens_of_user(&self, user: UserId) -> $crate::StoreResult<Vec<ApiToken>> {
                let rows = sqlx::query_as::<_, TokenRow>(concat!(
                    "SELECT ",
                    token_columns!(),
                    " FROM api_tokens WHERE user_id = $1 ORDER BY created_at, id"
                ))
                .bind(user.as_uuid())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn touch_token(&self, id: TokenId, now: chrono::DateTime<chrono::Utc>) -> $crate::StoreResult<()> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(Ts(now))
                    .bind(id.as_uuid())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn revoke_token(&self, id: TokenId, user: UserId, now: chrono::DateTime<chrono::Utc>) -> $crate::StoreResult<()> {
                let done = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3",
                )
                .bind(Ts(now))
                .bind(id.as_uuid())
                .bind(user.as_uuid())
                .execute(&self.pool)
                .await?;
                expect_one(done.rows_affected(), "token", id)
            }

            // ------------------------------------------------------- audit, usage

            async fn insert_audit_event(&self, e: &AuditEvent) -> $crate::StoreResult<()> {
                sqlx::query(concat!(
                    "INSERT INTO audit_events (",
                    audit_columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                ))
                .bind(e.id.as_uuid())
                .bind(Ts(e.at))
                .bind(e.actor_user_id.map(|u| u.as_uuid()))
                .bind(&e.actor)
                .bind(e.action.as_str())
                .bind(&e.target_type)
                .bind(&e.target_id)
                .bind(e.workspace_id.map(|w| w.as_uuid()))
                .bind(&e.source_addr)
                .bind(e.result.as_str())
                .bind(&e.detail)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn audit_events(&self, f: &AuditFilter) -> $crate::StoreResult<Vec<AuditEvent>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!("SELECT ", audit_columns!(), " FROM audit_events WHERE 1 = 1"));
                if let Some(user) = f.actor_user_id {
                    q.push(" AND actor_user_id = ").push_bind(user.as_uuid());
                }
                if let Some(action) = &f.action {
                    q.push(" AND action = ").push_bind(action.as_str());
                }
                if let Some(t) = &f.target_type {
                    q.push(" AND target_type = ").push_bind(t.clone());
                }
                if let Some(t) = &f.target_id {
                    q.push(" AND target_id = ").push_bind(t.clone());
                }
                if let Some(ws) = f.workspace_id {
                    q.push(" AND workspace_id = ").push_bind(ws.as_uuid());
                }
                if let Some(since) = f.since {
                    q.push(" AND at >= ").push_bind(Ts(since));
                }
                if let Some(until) = f.until {
                    q.push(" AND at < ").push_bind(Ts(until));
                }
                q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(f.limit.unwrap_or(1000).clamp(1, 10_000));
                let rows = q.build_query_as::<AuditRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn insert_usage_events(&self, events: &[UsageEvent]) -> $crate::StoreResult<()> {
                // Each credential's totals move once per batch, in id order (no deadlocks
                // between concurrent writers); events go in as multi-row inserts.
                let mut totals: std::collections::BTreeMap<uuid::Uuid, (i64, i64, i64, i64, chrono::DateTime<chrono::Utc>)> =
                    std::collections::BTreeMap::new();
                for e in events {
                    if let Some(credential) = e.credential_id {
                        let t = totals.entry(credential.as_uuid()).or_insert((0, 0, 0, 0, e.at));
                        t.0 += 1;
                        t.1 += e.input_tokens;
                        t.2 += e.output_tokens;
                        t.3 += e.cost_nano_usd;
                        t.4 = t.4.max(e.at);
                    }
                }
                let mut tx = self.pool.begin().await?;
                for chunk in events.chunks($crate::sql::USAGE_ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(concat!("INSERT INTO usage_events (", usage_columns!(), ") "));
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id.as_uuid())
                            .push_bind(Ts(e.at))
                            .push_bind(e.user_id.map(|u| u.as_uuid()))
                            .push_bind(e.workspace_id.map(|w| w.as_uuid()))
                            .push_bind(e.credential_id.map(|c| c.as_uuid()))
                            .push_bind(e.key_source.as_str())
                            .push_bind(&e.provider)
                            .push_bind(&e.model)
                            .push_bind(e.input_tokens)
                            .push_bind(e.output_tokens)
                            .push_bind(e.cost_nano_usd)
                            .push_bind(e.status)
                            .push_bind(e.latency_ms);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                for (credential, (requests, input, output, cost, last)) in totals {
                    sqlx::query(
                        "UPDATE credentials SET usage_requests = usage_requests + $1, \
                         usage_input_tokens = usage_input_tokens + $2, usage_output_tokens = usage_output_tokens + $3, \
                         usage_cost_nano_usd = usage_cost_nano_usd + $4, \
                         last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < $5 THEN $5 ELSE last_used_at END \
                         WHERE id = $6",
                    )
                    .bind(requests)
                    .bind(input)
                    .bind(output)
                    .bind(cost)
                    .bind(Ts(last))
                    .bind(credential)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn usage_since(
                &self,
                user: UserId,
                key_source: KeySource,
                since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<(i64, i64)> {
                let row: (i64, Option<i64>) = sqlx::query_as(
                    "SELECT COUNT(*), CAST(SUM(input_tokens + output_tokens) AS BIGINT) FROM usage_events \
                     WHERE user_id = $1 AND key_source = $2 AND at >= $3",
                )
                .bind(user.as_uuid())
                .bind(key_source.as_str())
                .bind(Ts(since))
                .fetch_one(&self.pool)
                .await?;
                Ok((row.0, row.1.unwrap_or(0)))
            }

            async fn demo_first_use(&self, user: UserId) -> $crate::StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
                let row: Option<(Ts,)> = sqlx::query_as("SELECT first_used_at FROM demo_first_use WHERE user_id = $1")
                    .bind(user.as_uuid())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0 .0))
            }

            async fn record_demo_first_use(
                &self,
                user: UserId,
                at: chrono::DateTime<chrono::Utc>,
            ) -> $crate::StoreResult<chrono::DateTime<chrono::Utc>> {
                sqlx::query("INSERT INTO demo_first_use (user_id, first_used_at) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
                    .bind(user.as_uuid())
                    .bind(Ts(at))
                    .execute(&self.pool)
                    .await?;
                Ok(self.demo_first_use(user).await?.unwrap_or(at))
            }

            async fn usage_events(&self, f: &UsageFilter) -> $crate::StoreResult<Vec<UsageEvent>> {
                let mut q = sqlx::QueryBuilder::<$db>::new(concat!("SELECT ", usage_columns!(), " FROM usage_events WHERE 1 = 1"));
                if let Some(user) = f.user_id {
                    q.push(" AND user_id = ").push_bind(user.as_uuid());
                }
                if let Some(ws) = f.workspace_id {
                    q.push(" AND workspace_id = ").push_bind(ws.as_uuid());
                }
                if let Some(c) = f.credential_id {
                    q.push(" AND credential_id = ").push_bind(c.as_uuid());
                }
                if let Some(p) = &f.provider {
                    q.push(" AND provider = ").push_bind(p.clone());
                }
                if let Some(since) = f.since {
                    q.push(" AND at >= ").push_bind(Ts(since));
                }
                if let Some(until) = f.until {
                    q.push(" AND at < ").push_bind(Ts(until));
                }
                q.push(" ORDER BY at DESC, id DESC LIMIT ").push_bind(f.limit.unwrap_or(10_000).clamp(1, 100_000));
                let rows = q.build_query_as::<UsageRow>().fetch_all(&self.pool).await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }
        }

        async fn insert_workspace<'e, E>(executor: E, ws: &Workspace) -> $crate::StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(concat!("INSERT INTO workspaces (", workspace_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7)"))
                .bind(ws.id.as_uuid())
                .bind(&ws.name)
                .bind(ws.status.as_str())
                .bind(ws.personal)
                .bind(&ws.external_id)
                .bind(Ts(ws.created_at))
                .bind(Ts(ws.updated_at))
                .execute(executor)
                .await?;
            Ok(())
        }

        async fn insert_user<'e, E>(executor: E, user: &User, password_hash: Option<&str>) -> $crate::StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(concat!("INSERT INTO users (", user_columns!(), ", password_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"))
                .bind(user.id.as_uuid())
                .bind(&user.email)
                .bind(&user.external_id)
                .bind(&user.tier)
                .bind(user.super_admin)
                .bind(Ts(user.created_at))
                .bind(Ts(user.updated_at))
                .bind(password_hash)
                .execute(executor)
                .await?;
            Ok(())
        }

        async fn insert_credential<'e, E>(executor: E, c: &Credential) -> $crate::StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = $db>,
        {
            sqlx::query(concat!(
                "INSERT INTO credentials (",
                credential_columns!(),
                ", owner_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
                 $19, $20, $21, $22, $23)"
            ))
            .bind(c.id.as_uuid())
            .bind(c.scope.as_str())
            .bind(c.workspace_id.map(|w| w.as_uuid()))
            .bind(c.owner_user_id.map(|u| u.as_uuid()))
            .bind(&c.provider)
            .bind(&c.name)
            .bind(&c.hint)
            .bind(&c.model)
            .bind(c.status.as_str())
            .bind(c.validity.as_str())
            .bind(&c.validity_detail)
            .bind(crate::ts::opt(c.validity_checked_at))
            .bind(c.operator_shared)
            .bind(&c.sealed)
            .bind(c.data_key_id.as_uuid())
            .bind(Ts(c.created_at))
            .bind(Ts(c.updated_at))
            .bind(crate::ts::opt(c.last_used_at))
            .bind(c.usage.requests)
            .bind(c.usage.input_tokens)
            .bind(c.usage.output_tokens)
            .bind(c.usage.cost_nano_usd)
            .bind(c.slot_key())
            .execute(executor)
            .await?;
            Ok(())
        }

        fn expect_one(rows: u64, entity: &'static str, id: impl ToString) -> $crate::StoreResult<()> {
            if rows == 0 {
                Err(StoreError::not_found(entity, id))
            } else {
                Ok(())
            }
        }
    };
}

pub(crate) use impl_store;
