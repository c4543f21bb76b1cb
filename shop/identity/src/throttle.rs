//! Login throttling in identity's database: every instance shares it and a restart forgets
//! nothing. Each attempt is counted *before* its password is checked, by a compare-and-set on
//! its keys' rows in one transaction, so thirty guesses at once cannot all slip under a limit.
//!
//! Three keys, each with its own number of free attempts, then progressive delays (1 s after
//! the last, doubling, up to the window), forgotten after a whole window of quiet:
//! - `pair:<email>|<address>`: one address guessing one account;
//! - `address:<address>`: one address trying many accounts (credential stuffing);
//! - `account:<email>`: every address together on one account — skipped for an address the
//!   account signed in from before, so a stranger slows guessing down without locking the
//!   owner out.
//!
//! A successful sign-in clears its pair and account keys and remembers the address.

use std::time::Duration;

use flotilla::store::{now_ms, Store};
use sqlx::{Any, Row, Transaction};

/// How many attempts a key allows before delays start, and how long quiet forgets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Attempts of one address at one account.
    pub per_pair: u32,
    /// Attempts of one address at any accounts.
    pub per_address: u32,
    /// Attempts at one account from addresses it never signed in from.
    pub per_account: u32,
    /// Quiet this long forgets a key; also the longest delay.
    pub window: Duration,
}

/// Why an attempt may not go ahead now.
#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// Too many attempts: try again after this long.
    #[error("too many attempts; retry in {0:?}")]
    Wait(Duration),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The throttle over identity's database.
#[derive(Debug, Clone)]
pub struct Throttle {
    store: Store,
}

/// The first delay once a key's free attempts are spent.
const FIRST_DELAY: Duration = Duration::from_secs(1);

/// How many times a reservation is tried when other attempts keep changing the same rows.
const RACES: usize = 50;

/// When the attempt after `attempts` may come, given its key's free attempts and window.
fn next_after(attempts: i64, free: u32, now: i64, window: Duration) -> i64 {
    if attempts < i64::from(free) {
        return 0;
    }
    let doublings = u32::try_from(attempts - i64::from(free)).unwrap_or(u32::MAX).min(30);
    let delay = FIRST_DELAY.saturating_mul(1u32 << doublings).min(window);
    now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)
}

impl Throttle {
    /// A throttle over identity's store.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Counts an attempt to sign in to `email` from `address`, before its password is checked;
    /// `Err(Wait)` when one of its keys allows none now (then nothing is counted).
    pub async fn attempt(&self, email: &str, address: &str, limits: &Limits) -> Result<(), ThrottleError> {
        let now = now_ms();
        let known =
            sqlx::query_scalar::<_, String>("SELECT address FROM known_addresses WHERE email = $1 AND address = $2")
                .bind(email)
                .bind(address)
                .fetch_optional(self.store.pool())
                .await?
                .is_some();
        let mut keys = vec![
            (format!("pair:{email}|{address}"), limits.per_pair),
            (format!("address:{address}"), limits.per_address),
        ];
        if !known {
            keys.push((format!("account:{email}"), limits.per_account));
        }
        for _ in 0..RACES {
            let mut tx = self.store.begin_write().await?;
            match reserve(&mut tx, &keys, now, limits.window).await? {
                Reserved::Yes => {
                    tx.commit().await?;
                    return Ok(());
                }
                Reserved::Wait(wait) => {
                    tx.rollback().await?;
                    return Err(ThrottleError::Wait(wait));
                }
                Reserved::Raced => tx.rollback().await?,
            }
        }
        // Never seen short of a flood on one key: refusing is the safe answer.
        Err(ThrottleError::Wait(FIRST_DELAY))
    }

    /// A successful sign-in: its pair and account keys are cleared and the address is known
    /// to the account from now on.
    pub async fn succeeded(&self, email: &str, address: &str) -> Result<(), ThrottleError> {
        let mut tx = self.store.begin_write().await?;
        for key in [format!("pair:{email}|{address}"), format!("account:{email}")] {
            sqlx::query("DELETE FROM login_throttle WHERE key = $1")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        // The address's count was for failures; this attempt was not one.
        sqlx::query("UPDATE login_throttle SET attempts = attempts - 1 WHERE key = $1 AND attempts > 0")
            .bind(format!("address:{address}"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO known_addresses (email, address, last_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (email, address) DO UPDATE SET last_ms = excluded.last_ms",
        )
        .bind(email)
        .bind(address)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops keys quiet for longer than `window` (they would count as fresh anyway).
    pub async fn prune(&self, window: Duration) -> Result<u64, ThrottleError> {
        let before = now_ms() - i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        Ok(
            sqlx::query("DELETE FROM login_throttle WHERE last_ms < $1 AND next_ms < $2")
                .bind(before)
                .bind(now_ms())
                .execute(self.store.pool())
                .await?
                .rows_affected(),
        )
    }
}

enum Reserved {
    Yes,
    Wait(Duration),
    Raced,
}

/// Counts one attempt on every key, or on none: each row is changed only if it still holds
/// what was read (compare-and-set), so a concurrent attempt makes this one start over.
async fn reserve(
    tx: &mut Transaction<'static, Any>,
    keys: &[(String, u32)],
    now: i64,
    window: Duration,
) -> Result<Reserved, sqlx::Error> {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    for (key, free) in keys {
        sqlx::query("INSERT INTO login_throttle (key, attempts, last_ms, next_ms) VALUES ($1, 0, 0, 0) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .execute(&mut **tx)
            .await?;
        let row = sqlx::query("SELECT attempts, last_ms, next_ms FROM login_throttle WHERE key = $1")
            .bind(key)
            .fetch_one(&mut **tx)
            .await?;
        let (attempts, last, next): (i64, i64, i64) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if now < next {
            return Ok(Reserved::Wait(Duration::from_millis((next - now).unsigned_abs())));
        }
        // A whole window of quiet forgets the key.
        let counted = if now - last >= window_ms { 0 } else { attempts };
        let changed = sqlx::query(
            "UPDATE login_throttle SET attempts = $1, last_ms = $2, next_ms = $3 \
             WHERE key = $4 AND attempts = $5 AND last_ms = $6 AND next_ms = $7",
        )
        .bind(counted + 1)
        .bind(now)
        .bind(next_after(counted + 1, *free, now, window))
        .bind(key)
        .bind(attempts)
        .bind(last)
        .bind(next)
        .execute(&mut **tx)
        .await?
        .rows_affected();
        if changed == 0 {
            return Ok(Reserved::Raced);
        }
    }
    Ok(Reserved::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_attempts_then_delays_that_double_up_to_the_window() {
        let window = Duration::from_secs(900);
        assert_eq!(next_after(4, 5, 0, window), 0);
        assert_eq!(next_after(5, 5, 0, window), 1_000);
        assert_eq!(next_after(6, 5, 0, window), 2_000);
        assert_eq!(next_after(9, 5, 0, window), 16_000);
        assert_eq!(next_after(40, 5, 0, window), 900_000);
    }
}
