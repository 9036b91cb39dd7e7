//! `RedisRates` against a real `redis-server`: rate budgets cluster-wide.
//!
//! `cargo test -p herdsman-redis -- --ignored` (needs `redis-server` on
//! `PATH`).

mod support;

use std::{num::NonZeroU32, time::Duration};

use herdsman::{
    backend::{BudgetKey, RateBackend, RateBudgets, RateQuota, RuleId, WhenFull},
    key::Key,
};
use herdsman_redis::{dev::RedisServer, RedisRates};
use support::{eventually, replica};

fn quota(max_keys: usize, when_full: WhenFull) -> RateQuota {
    RateQuota {
        rule: RuleId::new("default", 0),
        interval: Duration::from_secs(1),
        burst: NonZeroU32::new(2).unwrap(),
        keyed: true,
        max_keys,
        when_full,
    }
}

fn caller(n: u64) -> BudgetKey {
    BudgetKey {
        class: 0,
        identity: Some(Key::from(n)),
    }
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn what_one_replica_used_up_is_refused_on_another_after_a_round_trip() {
    let server = RedisServer::start().await.unwrap();
    let here = RedisRates::new(replica(&server)).budgets(&quota(100, WhenFull::Conform));
    let there = RedisRates::new(replica(&server)).budgets(&quota(100, WhenFull::Conform));

    // The burst, here.
    assert_eq!(here.check(&caller(1)), Ok(()));
    assert_eq!(here.check(&caller(1)), Ok(()));
    assert!(here.check(&caller(1)).is_err());
    let client = redis::Client::open(server.url()).unwrap();
    let con = client.get_multiplexed_async_connection().await.unwrap();
    eventually("in redis", || {
        let mut con = con.clone();
        async move {
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg("herdsman:rate:*")
                .query_async(&mut con)
                .await
                .ok()?;
            (!keys.is_empty()).then_some(())
        }
    })
    .await;

    // There, the first request is decided locally (let through); once its
    // round trip is back, the cluster's budget is known: refused for
    // longer than its own two requests would make it wait.
    let mut passed = 0;
    let wait = eventually("refused", || {
        let result = there.check(&caller(1));
        passed += u32::from(result.is_ok());
        async move { result.err() }
    })
    .await;
    assert!(passed <= 2, "{passed}");
    assert!(wait > Duration::from_millis(1500), "{wait:?}");
    assert_eq!(there.check(&caller(2)), Ok(()), "another caller");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn a_rule_is_one_budget_cluster_wide_whatever_order_replicas_build_their_rules_in() {
    let server = RedisServer::start().await.unwrap();
    // Here another class's rule is built first; there, only this one.
    let rates = RedisRates::new(replica(&server));
    let _other = rates.budgets(&RateQuota {
        rule: RuleId::new("other-class", 0),
        ..quota(100, WhenFull::Conform)
    });
    let here = rates.budgets(&quota(100, WhenFull::Conform));
    let there = RedisRates::new(replica(&server)).budgets(&quota(100, WhenFull::Conform));

    assert_eq!(here.check(&caller(1)), Ok(()));
    assert_eq!(here.check(&caller(1)), Ok(()));
    let mut passed = 0;
    eventually("refused there", || {
        let result = there.check(&caller(1));
        passed += u32::from(result.is_ok());
        async move { result.err() }
    })
    .await;
    assert!(passed <= 2, "{passed}");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn with_redis_down_a_replica_enforces_the_quota_alone() {
    let mut server = RedisServer::start().await.unwrap();
    let budgets = RedisRates::new(replica(&server)).budgets(&quota(100, WhenFull::Conform));
    server.kill().await.unwrap();
    assert_eq!(budgets.check(&caller(1)), Ok(()));
    assert_eq!(budgets.check(&caller(1)), Ok(()));
    let wait = budgets.check(&caller(1)).unwrap_err();
    assert!(wait <= Duration::from_secs(1), "{wait:?}");
}

#[tokio::test]
#[ignore = "needs redis-server"]
async fn full_budgets_decide_new_keys_as_the_rule_says_and_count_them() {
    let server = RedisServer::start().await.unwrap();
    let rates = RedisRates::new(replica(&server));
    let conform = rates.budgets(&quota(1, WhenFull::Conform));
    let refuse = rates.budgets(&RateQuota {
        rule: RuleId::new("refusing", 0),
        ..quota(1, WhenFull::Refuse)
    });
    for budgets in [&conform, &refuse] {
        assert_eq!(budgets.check(&caller(1)), Ok(()));
    }
    assert_eq!(conform.check(&caller(2)), Ok(()));
    assert!(refuse.check(&caller(2)).is_err());
    assert_eq!((conform.keys(), conform.untracked()), (1, 1));
    assert_eq!((refuse.keys(), refuse.untracked()), (1, 1));
}
