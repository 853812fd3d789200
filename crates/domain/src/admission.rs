//! Whether a key may create a run, in the spec's order (usable, quota, spend limit, balance). Every
//! store applies these rules to rows it has locked, in the transaction that charges the run; a
//! store that admits several runs in one transaction applies them one after another to running
//! totals, so the runs of one batch see each other exactly as separate transactions would.

use crate::account::ApiKey;
use crate::money::Millicents;
use crate::run::NewRun;
use crate::store::CreateRunError;

/// The key's checks (steps before the balance): the key, as it stands now, is usable by the run's
/// account at the run's time, its quota has room and its spend limit takes the price. The run's
/// test flag must be the key's (it decided the price and whether a provider is called). A run
/// authenticated from a remembered copy of the key ([`NewRun::key_remembered`]) also needs the
/// key to have no IP allowlist: the request's address was not checked against the current one.
pub fn check_key(key: &ApiKey, run: &NewRun) -> Result<(), CreateRunError> {
    if !key.is_usable(run.created_at)
        || key.account_id != run.account_id
        || key.test != run.test
        || (run.key_remembered && !key.allow_ips.is_empty())
    {
        return Err(CreateRunError::KeyNotUsable);
    }
    if key.quota_exhausted() {
        return Err(CreateRunError::QuotaExhausted);
    }
    if key.would_pass_spend_limit(run.price) {
        return Err(CreateRunError::SpendLimit);
    }
    Ok(())
}

/// Every check, against a key row and a balance that earlier admissions of the same transaction
/// have already been applied to; on success applies this run's charge to both (the key's spend
/// and run count, the balance), so the next admission sees it.
pub fn admit(
    key: &mut ApiKey,
    balance: &mut Millicents,
    run: &NewRun,
) -> Result<(), CreateRunError> {
    check_key(key, run)?;
    if *balance < run.price {
        return Err(CreateRunError::InsufficientBalance);
    }
    *balance = *balance - run.price;
    // `check_key` bounded the spend by the limit, or there is none: saturate rather than wrap.
    key.spent = key
        .spent
        .checked_add(run.price)
        .unwrap_or(Millicents(i64::MAX));
    key.runs_created = key.runs_created.saturating_add(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn key(spend_limit: Option<i64>, quota: Option<u64>) -> ApiKey {
        ApiKey {
            id: "key_1".into(),
            account_id: "acct_1".into(),
            name: String::new(),
            prefix: "sk-x".into(),
            hash: crate::ids::KeyHash::of("sk-x"),
            disabled: false,
            test: false,
            expires_at: None,
            allow_ips: Default::default(),
            spend_limit: spend_limit.map(Millicents),
            spent: Millicents::ZERO,
            quota,
            runs_created: 0,
            created_at: Timestamp(0),
            last_used_at: None,
            deleted_at: None,
        }
    }

    fn run(price: i64) -> NewRun {
        NewRun {
            id: "run_1".into(),
            account_id: "acct_1".into(),
            key_id: "key_1".into(),
            model: "runbase/echo".into(),
            input: serde_json::json!({}),
            price: Millicents(price),
            created_at: Timestamp(1),
            test: false,
            idempotency: None,
            webhook: None,
            key_remembered: false,
        }
    }

    #[test]
    fn running_totals_refuse_exactly_at_each_limit() {
        // Balance 5 runs, spend limit 3 runs, quota 4 runs: the spend limit bites first.
        let mut k = key(Some(300), Some(4));
        let mut balance = Millicents(500);
        let outcomes: Vec<_> = (0..6)
            .map(|_| admit(&mut k, &mut balance, &run(100)).map_err(|e| e.to_string()))
            .collect();
        assert_eq!(outcomes.iter().filter(|o| o.is_ok()).count(), 3);
        assert_eq!(outcomes[3], Err(CreateRunError::SpendLimit.to_string()));
        assert_eq!(
            (k.spent, k.runs_created, balance),
            (Millicents(300), 3, Millicents(200))
        );

        let mut k = key(None, Some(2));
        let mut balance = Millicents(500);
        assert!(admit(&mut k, &mut balance, &run(100)).is_ok());
        assert!(admit(&mut k, &mut balance, &run(100)).is_ok());
        assert!(matches!(
            admit(&mut k, &mut balance, &run(100)),
            Err(CreateRunError::QuotaExhausted)
        ));

        let mut k = key(None, None);
        let mut balance = Millicents(150);
        assert!(admit(&mut k, &mut balance, &run(100)).is_ok());
        assert!(matches!(
            admit(&mut k, &mut balance, &run(100)),
            Err(CreateRunError::InsufficientBalance)
        ));
        // A refusal changes nothing.
        assert_eq!(
            (k.spent, k.runs_created, balance),
            (Millicents(100), 1, Millicents(50))
        );
        // A free run passes with no balance left.
        let mut empty = Millicents::ZERO;
        assert!(admit(&mut k, &mut empty, &run(0)).is_ok());
    }

    #[test]
    fn another_accounts_or_disabled_key_is_not_usable() {
        let mut k = key(None, None);
        let mut other = run(1);
        other.account_id = "acct_2".into();
        assert!(matches!(
            admit(&mut k, &mut Millicents(10), &other),
            Err(CreateRunError::KeyNotUsable)
        ));
        k.disabled = true;
        assert!(matches!(
            admit(&mut k, &mut Millicents(10), &run(1)),
            Err(CreateRunError::KeyNotUsable)
        ));
    }

    /// A run authenticated from a remembered copy of its key passes only while the key has no
    /// allowlist: one added since was not checked against the request's address.
    #[test]
    fn a_remembered_key_must_still_have_no_allowlist() {
        let mut k = key(None, None);
        let mut remembered = run(1);
        remembered.key_remembered = true;
        assert!(check_key(&k, &remembered).is_ok());
        k.allow_ips = crate::ip::IpAllowlist::parse(&["127.0.0.1"]).unwrap();
        assert!(matches!(
            check_key(&k, &remembered),
            Err(CreateRunError::KeyNotUsable)
        ));
        // A key read for the request had its allowlist checked then.
        assert!(check_key(&k, &run(1)).is_ok());
    }

    /// A run made as a test key's (free, simulated) needs a test key, and the other way round.
    #[test]
    fn the_run_and_the_key_agree_on_test() {
        let mut k = key(None, None);
        let mut test_run = run(0);
        test_run.test = true;
        assert!(matches!(
            check_key(&k, &test_run),
            Err(CreateRunError::KeyNotUsable)
        ));
        k.test = true;
        assert!(check_key(&k, &test_run).is_ok());
        assert!(matches!(
            check_key(&k, &run(1)),
            Err(CreateRunError::KeyNotUsable)
        ));
    }
}
