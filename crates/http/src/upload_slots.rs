//! How many uploads one node receives at once: in all (`[uploads] max_concurrent`), per account
//! (`max_concurrent_per_account`) and per client address (`max_concurrent_per_ip`). The total
//! bounds what uploads hold in memory; the shares keep one client (or one person's many free
//! accounts, all from one address) from taking every slot with slow bodies. A slot is taken
//! before the body is read and given back when the upload ends, however it ends.

use runbase_domain::{ApiError, ErrorCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The node's upload slots.
#[derive(Debug)]
pub struct UploadSlots {
    total: Arc<Semaphore>,
    per_account: u32,
    per_ip: u32,
    /// Uploads in progress per holder (`acct:...`, `ip:...`); no entry at zero.
    held: Mutex<HashMap<String, u32>>,
}

/// One upload's slot; dropping it gives the slot back.
#[derive(Debug)]
pub struct UploadSlot {
    slots: Arc<UploadSlots>,
    holders: Vec<String>,
    _permit: OwnedSemaphorePermit,
}

impl UploadSlots {
    /// `total`, `per_account` and `per_ip` slots (each at least 1).
    pub fn new(total: u32, per_account: u32, per_ip: u32) -> Self {
        UploadSlots {
            total: Arc::new(Semaphore::new(total.max(1) as usize)),
            per_account: per_account.max(1),
            per_ip: per_ip.max(1),
            held: Mutex::default(),
        }
    }

    /// A slot for an upload of `account_id` from `ip`, or the refusal: `429 RATE_LIMITED` when
    /// the account or the address already sends its share, `503` when the node is full.
    pub fn take(
        self: &Arc<Self>,
        account_id: &str,
        ip: Option<IpAddr>,
    ) -> Result<UploadSlot, ApiError> {
        let mut holders = vec![(format!("acct:{account_id}"), self.per_account, "account")];
        if let Some(ip) = ip {
            holders.push((format!("ip:{ip}"), self.per_ip, "address"));
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        for (holder, share, what) in &holders {
            if held.get(holder).copied().unwrap_or(0) >= *share {
                return Err(ApiError::new(
                    ErrorCode::RateLimited,
                    format!(
                        "This {what} is already sending {share} uploads at once, as many as \
                         this server takes from one {what}; retry when one has finished"
                    ),
                ));
            }
        }
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "This server is receiving as many uploads as it takes at once; nothing was \
                 kept. Retry in a moment",
            ));
        };
        for (holder, _, _) in &holders {
            *held.entry(holder.clone()).or_insert(0) += 1;
        }
        Ok(UploadSlot {
            slots: self.clone(),
            holders: holders.into_iter().map(|(h, _, _)| h).collect(),
            _permit: permit,
        })
    }
}

impl Drop for UploadSlot {
    fn drop(&mut self) {
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for holder in &self.holders {
            if let Some(n) = held.get_mut(holder) {
                *n -= 1;
                if *n == 0 {
                    held.remove(holder);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_the_total_are_kept_and_given_back() {
        let slots = Arc::new(UploadSlots::new(3, 2, 2));
        let ip = |n: u8| Some(IpAddr::from([10, 0, 0, n]));
        let a1 = slots.take("a", ip(1)).unwrap();
        let a2 = slots.take("a", ip(2)).unwrap();
        let e = slots.take("a", ip(3)).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited, "the account's share");
        let b1 = slots.take("b", ip(1)).unwrap();
        let e = slots.take("c", ip(1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited, "the address's share");
        let e = slots.take("c", ip(4)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ServiceUnavailable, "the node is full");
        drop((a1, a2, b1));
        assert!(slots.held.lock().unwrap().is_empty());
        let _ = slots.take("a", None).unwrap();
    }
}
