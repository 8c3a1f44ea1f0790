//! `Store::usage_report` and `Store::usage_by_day`: exact totals grouped in SQL, against
//! sums worked out by hand.

use crate::fixtures::Fixture;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use keygate_core::*;
use keygate_store::testdb::TestDb;
use keygate_store::{both_backends, connect, DailyUsageTotals, UsageFilter, UsageGrouping, UsageTotals};

both_backends!(usage_reports_group_and_sum_exactly, usage_by_day_groups_by_utc_day_and_one_dimension);

fn at(day: u32, hour: u32, min: u32, sec: u32, micro: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, min, sec).unwrap() + chrono::Duration::microseconds(micro.into())
}

fn row(key: &str, requests: i64, input_tokens: i64, output_tokens: i64, cost_nano_usd: i64) -> UsageTotals {
    UsageTotals { key: key.into(), requests, input_tokens, output_tokens, cost_nano_usd }
}

async fn usage_reports_group_and_sum_exactly(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let c1 = f.user_credential("openai");
    let c2 = f.user_credential("anthropic");
    store.insert_credential(&c1).await.unwrap();
    store.insert_credential(&c2).await.unwrap();
    let someone_else = UserId::new();
    let big = 5_000_000_000_000; // past 32 bits: sums must stay exact 64-bit integers
    let event =
        |user, at, provider: &str, model: Option<&str>, credential: Option<&Credential>, source: &str, n: i64| {
            UsageEvent {
                id: UsageEventId::new(),
                at,
                user_id: Some(user),
                workspace_id: Some(f.workspace.id),
                credential_id: credential.map(|c| c.id),
                key_source: source.parse().unwrap(),
                provider: provider.into(),
                model: model.map(Into::into),
                input_tokens: 100 * n,
                output_tokens: 10 * n,
                cost_nano_usd: if n == 7 { big } else { 1_000 * n },
                status: 200,
                latency_ms: 5,
                estimated: false,
                session_id: None,
            }
        };
    let me = f.user.id;
    // Days are UTC days: the second event is the last microsecond of March 1st, the third
    // the first of March 2nd.
    let events = [
        event(me, at(1, 10, 0, 0, 0), "openai", Some("gpt-4o"), Some(&c1), "user", 1),
        event(me, at(1, 23, 59, 59, 999_999), "openai", Some("gpt-4o-mini"), Some(&c1), "user", 2),
        event(me, at(2, 0, 0, 0, 0), "anthropic", Some("claude"), Some(&c2), "user", 3),
        event(me, at(2, 12, 0, 0, 0), "openai", None, None, "operator_demo", 4),
        event(me, at(3, 8, 0, 0, 0), "anthropic", None, Some(&c2), "user", 5),
        event(someone_else, at(2, 9, 0, 0, 0), "openai", Some("gpt-4o"), None, "platform", 6),
        event(me, at(3, 9, 0, 0, 0), "openai", Some("gpt-4o"), None, "platform", 7),
    ];
    store.insert_usage_events(&events).await.unwrap();
    let all = UsageFilter::default();
    let report = |filter: UsageFilter, by| {
        let store = store.clone();
        async move { store.usage_report(&filter, by).await.unwrap() }
    };

    assert_eq!(
        report(all.clone(), UsageGrouping::Day).await,
        vec![
            row("2026-03-01", 2, 300, 30, 3_000),
            row("2026-03-02", 3, 1_300, 130, 13_000),
            row("2026-03-03", 2, 1_200, 120, 5_000 + big),
        ]
    );
    assert_eq!(
        report(all.clone(), UsageGrouping::Provider).await,
        vec![row("anthropic", 2, 800, 80, 8_000), row("openai", 5, 2_000, 200, 13_000 + big)]
    );
    assert_eq!(
        report(all.clone(), UsageGrouping::Model).await,
        vec![
            row("(unknown)", 2, 900, 90, 9_000),
            row("claude", 1, 300, 30, 3_000),
            row("gpt-4o", 3, 1_400, 140, 7_000 + big),
            row("gpt-4o-mini", 1, 200, 20, 2_000),
        ]
    );
    let mut by_credential = vec![
        row("(none)", 3, 1_700, 170, 10_000 + big),
        row(&c1.id.to_string(), 2, 300, 30, 3_000),
        row(&c2.id.to_string(), 2, 800, 80, 8_000),
    ];
    by_credential.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(report(all.clone(), UsageGrouping::Credential).await, by_credential);
    assert!(c1.id.to_string().contains('-'), "credentials are named by their hyphenated UUID");
    assert_eq!(
        report(all.clone(), UsageGrouping::Source).await,
        vec![
            row("operator_demo", 1, 400, 40, 4_000),
            row("platform", 2, 1_300, 130, 6_000 + big),
            row("user", 4, 1_100, 110, 11_000),
        ]
    );

    // Filters narrow what is summed; `until` is exclusive; `limit` is ignored.
    let mine = UsageFilter { user_id: Some(me), ..Default::default() };
    assert_eq!(
        report(mine, UsageGrouping::Provider).await,
        vec![row("anthropic", 2, 800, 80, 8_000), row("openai", 4, 1_400, 140, 7_000 + big)]
    );
    let window = UsageFilter {
        provider: Some("openai".into()),
        since: Some(at(2, 0, 0, 0, 0)),
        until: Some(at(3, 9, 0, 0, 0)),
        ..Default::default()
    };
    assert_eq!(report(window, UsageGrouping::Day).await, vec![row("2026-03-02", 2, 1_000, 100, 10_000)]);
    let one = UsageFilter { limit: Some(1), ..Default::default() };
    assert_eq!(report(one, UsageGrouping::Source).await, report(all, UsageGrouping::Source).await);
    let nobody = UsageFilter { user_id: Some(UserId::new()), ..Default::default() };
    assert!(report(nobody, UsageGrouping::Day).await.is_empty());
}

fn daily(day: u32, totals: UsageTotals) -> DailyUsageTotals {
    DailyUsageTotals { day: NaiveDate::from_ymd_opt(2026, 3, day).unwrap(), totals }
}

async fn usage_by_day_groups_by_utc_day_and_one_dimension(db: TestDb) {
    let store = connect(&db.location).await.unwrap();
    let f = Fixture::new(&*store).await;
    let c1 = f.user_credential("openai");
    let c2 = f.user_credential("anthropic");
    store.insert_credential(&c1).await.unwrap();
    store.insert_credential(&c2).await.unwrap();
    let me = f.user.id;
    let big = 5_000_000_000_000;
    let event = |user, at, provider: &str, credential: Option<&Credential>, source: &str, n: i64| UsageEvent {
        id: UsageEventId::new(),
        at,
        user_id: Some(user),
        workspace_id: Some(f.workspace.id),
        credential_id: credential.map(|c| c.id),
        key_source: source.parse().unwrap(),
        provider: provider.into(),
        model: None,
        input_tokens: 100 * n,
        output_tokens: 10 * n,
        cost_nano_usd: if n == 6 { big } else { 1_000 * n },
        status: 200,
        latency_ms: 5,
        estimated: false,
        session_id: None,
    };
    // March 1st: two providers in one day, the second event at its last microsecond;
    // March 2nd starts at midnight UTC; someone else's event on March 2nd is never counted.
    let events = [
        event(me, at(1, 9, 0, 0, 0), "openai", Some(&c1), "user", 1),
        event(me, at(1, 10, 0, 0, 0), "anthropic", Some(&c2), "user", 2),
        event(me, at(1, 23, 59, 59, 999_999), "openai", Some(&c1), "user", 3),
        event(me, at(2, 0, 0, 0, 0), "openai", None, "operator_demo", 4),
        event(UserId::new(), at(2, 1, 0, 0, 0), "openai", None, "platform", 5),
        event(me, at(4, 23, 0, 0, 0), "anthropic", Some(&c2), "platform", 6),
    ];
    store.insert_usage_events(&events).await.unwrap();
    let mine = UsageFilter { user_id: Some(me), ..Default::default() };
    let by_day = |filter: UsageFilter, by| {
        let store = store.clone();
        async move { store.usage_by_day(&filter, by).await.unwrap() }
    };

    let by_provider = by_day(mine.clone(), UsageGrouping::Provider).await;
    assert_eq!(
        by_provider,
        vec![
            daily(1, row("anthropic", 1, 200, 20, 2_000)),
            daily(1, row("openai", 2, 400, 40, 4_000)),
            daily(2, row("openai", 1, 400, 40, 4_000)),
            daily(4, row("anthropic", 1, 600, 60, big)),
        ]
    );
    assert_eq!(
        by_day(mine.clone(), UsageGrouping::Source).await,
        vec![
            daily(1, row("user", 3, 600, 60, 6_000)),
            daily(2, row("operator_demo", 1, 400, 40, 4_000)),
            daily(4, row("platform", 1, 600, 60, big)),
        ]
    );
    let mut credentials = vec![
        daily(1, row(&c1.id.to_string(), 2, 400, 40, 4_000)),
        daily(1, row(&c2.id.to_string(), 1, 200, 20, 2_000)),
        daily(2, row("(none)", 1, 400, 40, 4_000)),
        daily(4, row(&c2.id.to_string(), 1, 600, 60, big)),
    ];
    credentials.sort_by(|a, b| (a.day, &a.totals.key).cmp(&(b.day, &b.totals.key)));
    assert_eq!(by_day(mine.clone(), UsageGrouping::Credential).await, credentials);

    // Every grouping adds up to the report by day and to the report by group.
    let per_day = store.usage_report(&mine, UsageGrouping::Day).await.unwrap();
    for by in [UsageGrouping::Provider, UsageGrouping::Model, UsageGrouping::Credential, UsageGrouping::Source] {
        let rows = by_day(mine.clone(), by).await;
        for day in &per_day {
            let of_day: Vec<_> = rows.iter().filter(|r| r.day.to_string() == day.key).collect();
            let sum = |f: fn(&UsageTotals) -> i64| of_day.iter().map(|r| f(&r.totals)).sum::<i64>();
            assert_eq!(
                (sum(|t| t.requests), sum(|t| t.input_tokens), sum(|t| t.output_tokens), sum(|t| t.cost_nano_usd)),
                (day.requests, day.input_tokens, day.output_tokens, day.cost_nano_usd),
                "{by:?} on {}",
                day.key
            );
        }
        let mut by_group: Vec<UsageTotals> = Vec::new();
        for r in &rows {
            match by_group.iter_mut().find(|t| t.key == r.totals.key) {
                Some(t) => {
                    t.requests += r.totals.requests;
                    t.input_tokens += r.totals.input_tokens;
                    t.output_tokens += r.totals.output_tokens;
                    t.cost_nano_usd += r.totals.cost_nano_usd;
                }
                None => by_group.push(r.totals.clone()),
            }
        }
        by_group.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(by_group, store.usage_report(&mine, by).await.unwrap(), "{by:?}");
    }

    // The window is half-open and in UTC: from March 2nd 00:00 up to (not including)
    // March 4th 23:00.
    let window = UsageFilter { since: Some(at(2, 0, 0, 0, 0)), until: Some(at(4, 23, 0, 0, 0)), ..mine };
    assert_eq!(by_day(window, UsageGrouping::Provider).await, vec![daily(2, row("openai", 1, 400, 40, 4_000))]);
    let nobody = UsageFilter { user_id: Some(UserId::new()), ..Default::default() };
    assert!(by_day(nobody, UsageGrouping::Provider).await.is_empty());
}
