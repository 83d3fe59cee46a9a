//! TAO deposits as stored: each account's deposit address, how far each chain has been read,
//! the free balance last seen on each address, and every increase seen.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::DbConn;
use crate::db::schema::{tao_addresses, tao_balances, tao_cursors, tao_deposits};
use crate::domain::{AccountId, Nano, TenantId};

fn is_unique_violation(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _)
    )
}

/// An account's deposit address.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tao_addresses)]
pub struct TaoAddress {
    pub account_id: AccountId,
    pub tenant_id: TenantId,
    pub address: String,
    /// Hex of the 32-byte sr25519 public key.
    pub public_key: String,
    pub derivation_path: String,
    pub created_at: NaiveDateTime,
}

impl TaoAddress {
    pub fn find(conn: &mut DbConn, account: &AccountId) -> QueryResult<Option<Self>> {
        tao_addresses::table
            .find(account)
            .select(Self::as_select())
            .first(conn)
            .optional()
    }

    /// Records it unless the account has one (a concurrent request made it first); the stored one.
    pub fn remember(self, conn: &mut DbConn) -> QueryResult<Self> {
        match conn.transaction(|c| {
            diesel::insert_into(tao_addresses::table)
                .values(&self)
                .execute(c)
        }) {
            Ok(_) => Ok(self),
            Err(e) if is_unique_violation(&e) => Self::find(conn, &self.account_id)?.ok_or(e),
            Err(e) => Err(e),
        }
    }

    pub fn all(conn: &mut DbConn) -> QueryResult<Vec<Self>> {
        tao_addresses::table
            .order(tao_addresses::address.asc())
            .select(Self::as_select())
            .load(conn)
    }
}

/// How far a chain has been read.
pub struct TaoCursor;

impl TaoCursor {
    /// The last block read on the chain with `genesis`.
    pub fn get(conn: &mut DbConn, genesis: &str) -> QueryResult<Option<i64>> {
        tao_cursors::table
            .find(genesis)
            .select(tao_cursors::block_number)
            .first(conn)
            .optional()
    }

    /// Claims block `number` (after `number - 1`, or as the first block read); false if another
    /// watcher read it first. Takes the cursor's row lock for the caller's transaction.
    pub fn claim(conn: &mut DbConn, genesis: &str, number: i64, hash: &str) -> QueryResult<bool> {
        let now = crate::db::now();
        let moved = diesel::update(
            tao_cursors::table
                .find(genesis)
                .filter(tao_cursors::block_number.eq(number - 1)),
        )
        .set((
            tao_cursors::block_number.eq(number),
            tao_cursors::block_hash.eq(hash),
            tao_cursors::updated_at.eq(now),
        ))
        .execute(conn)?;
        if moved == 1 {
            return Ok(true);
        }
        if Self::get(conn, genesis)?.is_some() {
            return Ok(false);
        }
        match conn.transaction(|c| {
            diesel::insert_into(tao_cursors::table)
                .values((
                    tao_cursors::genesis_hash.eq(genesis),
                    tao_cursors::block_number.eq(number),
                    tao_cursors::block_hash.eq(hash),
                    tao_cursors::updated_at.eq(now),
                ))
                .execute(c)
        }) {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl TaoCursor {
    /// Moves the cursor forward to `number` unconditionally (no deposit address exists yet).
    pub fn jump(conn: &mut DbConn, genesis: &str, number: i64, hash: &str) -> QueryResult<()> {
        let now = crate::db::now();
        match Self::get(conn, genesis)? {
            Some(at) if at >= number => Ok(()),
            Some(_) => diesel::update(tao_cursors::table.find(genesis))
                .set((
                    tao_cursors::block_number.eq(number),
                    tao_cursors::block_hash.eq(hash),
                    tao_cursors::updated_at.eq(now),
                ))
                .execute(conn)
                .map(drop),
            None => Self::claim(conn, genesis, number, hash).map(drop),
        }
    }
}

/// Free balances last seen.
pub struct TaoBalance;

impl TaoBalance {
    /// The free balance last seen on `address` (0: never seen — a fresh address holds nothing).
    pub fn last(conn: &mut DbConn, genesis: &str, address: &str) -> QueryResult<i64> {
        tao_balances::table
            .find((genesis, address))
            .select(tao_balances::free_rao)
            .first(conn)
            .optional()
            .map(|v| v.unwrap_or(0))
    }

    /// The free balance last seen on `address` on the chain read most recently (0 if never seen).
    pub fn latest(conn: &mut DbConn, address: &str) -> QueryResult<i64> {
        tao_balances::table
            .filter(tao_balances::address.eq(address))
            .order(tao_balances::block_number.desc())
            .select(tao_balances::free_rao)
            .first(conn)
            .optional()
            .map(|v| v.unwrap_or(0))
    }

    pub fn set(
        conn: &mut DbConn,
        genesis: &str,
        address: &str,
        free: i64,
        block: i64,
    ) -> QueryResult<()> {
        let updated = diesel::update(tao_balances::table.find((genesis, address)))
            .set((
                tao_balances::free_rao.eq(free),
                tao_balances::block_number.eq(block),
            ))
            .execute(conn)?;
        if updated == 0 {
            diesel::insert_into(tao_balances::table)
                .values((
                    tao_balances::genesis_hash.eq(genesis),
                    tao_balances::address.eq(address),
                    tao_balances::free_rao.eq(free),
                    tao_balances::block_number.eq(block),
                ))
                .execute(conn)?;
        }
        Ok(())
    }
}

/// One increase of a deposit address's balance.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = tao_deposits)]
pub struct TaoDeposit {
    pub id: String,
    pub genesis_hash: String,
    pub block_number: i64,
    pub block_hash: String,
    pub address: String,
    pub tenant_id: TenantId,
    pub account_id: AccountId,
    pub amount_rao: i64,
    pub rate: i64,
    pub rate_source: String,
    pub credited_nano: Nano,
    pub status: String,
    pub created_at: NaiveDateTime,
}

impl TaoDeposit {
    /// Records it once per (genesis, block, address); whether this call recorded it.
    pub fn record(&self, conn: &mut DbConn) -> QueryResult<bool> {
        match conn.transaction(|c| {
            diesel::insert_into(tao_deposits::table)
                .values(self)
                .execute(c)
        }) {
            Ok(_) => Ok(true),
            Err(e) if is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// An account's deposits, oldest first.
    pub fn of_account(conn: &mut DbConn, account: &AccountId) -> QueryResult<Vec<Self>> {
        tao_deposits::table
            .filter(tao_deposits::account_id.eq(account))
            .order(tao_deposits::id.asc())
            .select(Self::as_select())
            .load(conn)
    }
}
