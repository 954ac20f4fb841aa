//! Anomaly detection: an injected burst is found; steady traffic stays quiet.

mod common;

use common::*;
use sluice_metrics::Metrics;
use sluice_plugin_sdk::native::NativePlugin;
use sluice_plugin_sdk::{Record, Route};

const LATENESS: i64 = 30 * S;

/// Feed `stream` window by window (then tick it closed); return the alerts.
fn alerts_of(p: &mut NativePlugin<Metrics>, stream: Vec<Record>, close_at: i64) -> Vec<Record> {
    let mut out = p.process(stream).unwrap();
    // The host's tick reports event time; the plugin still waits out its allowed lateness.
    out.extend(p.tick(close_at + LATENESS).unwrap());
    out.into_iter()
        .filter(|r| r.route == Route::Alerts)
        .collect()
}

#[test]
fn an_error_burst_and_a_latency_spike_are_detected() {
    let mut rng = Rng::new(3);
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    // 30 minutes of steady traffic: 5 rps, 1 % errors, p50 40 ms.
    let calm = steady(&mut rng, "checkout", T0, 1800, 5.0, 0.01, 40.0);
    assert!(alerts_of(&mut p, calm, T0 + 1800 * S).is_empty());
    // Then one minute at 30 % errors.
    let t1 = T0 + 1800 * S;
    let burst = steady(&mut rng, "checkout", t1, 60, 5.0, 0.30, 40.0);
    let alerts = alerts_of(&mut p, burst, t1 + 60 * S);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.get_str("alert.kind"), Some("error_rate_spike"));
    assert_eq!(a.get_str("alert.severity"), Some("critical"));
    assert_eq!(a.get_str("service.name"), Some("checkout"));
    assert_eq!(
        (get_i(a, "alert.window.start"), get_i(a, "alert.window.end")),
        (t1, t1 + 60 * S)
    );
    assert!(get_f(a, "alert.observed") > 0.2 && get_f(a, "alert.baseline") < 0.03);
    assert!(get_f(a, "alert.zscore") >= 8.0);
    assert!(
        a.body.contains("checkout") && a.body.contains("2026-11-25T10:30:00Z"),
        "{}",
        a.body
    );
    // Deterministic id: same service, kind and window → same id on any host.
    let id = a.get_str("alert.id").unwrap().to_string();
    let mut again = NativePlugin::<Metrics>::new("{}").unwrap();
    let mut rng = Rng::new(3);
    let calm = steady(&mut rng, "checkout", T0, 1800, 5.0, 0.01, 40.0);
    alerts_of(&mut again, calm, T0 + 1800 * S);
    let burst = steady(&mut rng, "checkout", t1, 60, 5.0, 0.30, 40.0);
    assert_eq!(
        alerts_of(&mut again, burst, t1 + 60 * S)[0].get_str("alert.id"),
        Some(id.as_str())
    );

    // A minute later, latency triples (errors back to normal).
    let t2 = t1 + 60 * S;
    let slow = steady(&mut rng, "checkout", t2, 60, 5.0, 0.01, 120.0);
    let alerts = alerts_of(&mut p, slow, t2 + 60 * S);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].get_str("alert.kind"), Some("latency_p99_spike"));
    assert!(get_f(&alerts[0], "alert.observed") - get_f(&alerts[0], "alert.baseline") >= 50.0);
}

#[test]
fn another_service_burst_does_not_alert_a_calm_one() {
    let mut rng = Rng::new(5);
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    let mut s = steady(&mut rng, "a", T0, 900, 4.0, 0.01, 30.0);
    s.extend(steady(&mut rng, "b", T0, 900, 4.0, 0.01, 30.0));
    s.extend(steady(&mut rng, "a", T0 + 900 * S, 60, 4.0, 0.5, 30.0));
    s.extend(steady(&mut rng, "b", T0 + 900 * S, 60, 4.0, 0.01, 30.0));
    s.sort_by_key(|r| r.timestamp);
    let alerts = alerts_of(&mut p, s, T0 + 960 * S);
    let services: Vec<_> = alerts
        .iter()
        .map(|a| a.get_str("service.name").unwrap())
        .collect();
    assert_eq!(services, ["a"]);
}

/// 10,000 windows (about a week) of steady Poisson traffic for two services of different
/// size: every alert is a false positive. The measured rate is in the README.
#[test]
fn steady_traffic_raises_no_alerts() {
    const WINDOWS: i64 = 10_000;
    let mut rng = Rng::new(42);
    let mut p = NativePlugin::<Metrics>::new("{}").unwrap();
    let mut alerts = Vec::new();
    let mut windows = 0;
    // An hour at a time keeps memory small.
    for hour in 0..WINDOWS / 60 + 1 {
        let from = T0 + hour * 3600 * S;
        let secs = 3600.min((WINDOWS - hour * 60) * 60);
        if secs <= 0 {
            break;
        }
        let mut s = steady(&mut rng, "small", from, secs, 1.0, 0.02, 40.0);
        s.extend(steady(&mut rng, "large", from, secs, 5.0, 0.005, 15.0));
        s.sort_by_key(|r| r.timestamp);
        for r in p.process(s).unwrap() {
            match r.route {
                Route::Alerts => alerts.push(r),
                Route::Metrics => windows += 1,
                _ => {}
            }
        }
    }
    let rest = p.tick(T0 + (WINDOWS + 10) * 60 * S).unwrap();
    windows += rest.iter().filter(|r| r.route == Route::Metrics).count();
    alerts.extend(rest.into_iter().filter(|r| r.route == Route::Alerts));
    eprintln!(
        "steady traffic: {} alerts in {windows} service-windows (false-positive rate {:.2e})",
        alerts.len(),
        alerts.len() as f64 / windows as f64
    );
    for a in &alerts {
        eprintln!("  {}", a.body);
    }
    assert_eq!(windows as i64, 2 * WINDOWS);
    assert!(alerts.is_empty());
}
