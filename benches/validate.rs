//! Per-event cost of parse + validate for one type of each family, next to parse alone.
//! Run: `cargo bench --bench validate`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use eventyard::schema::Registry;

/// (type, body): the Infrahub body is the peers' benchmark body (474 bytes).
const EVENTS: [(&str, &str); 3] = [
    ("infrahub/check.generator.run", include_str!("data/check.generator.run.json")),
    ("fixinventory/cleanup_plan", include_str!("data/cleanup_plan.json")),
    ("idem/idem-state", include_str!("data/idem-state.json")),
];

fn bench(c: &mut Criterion) {
    let registry = eventyard::app::registry(&Default::default()).expect("built-in catalogue");
    for (ty, body) in EVENTS {
        let t = Registry::get(&registry, ty).unwrap().clone();
        let mut g = c.benchmark_group(ty);
        g.throughput(criterion::Throughput::Elements(1));
        g.bench_function("parse", |b| b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(body)).unwrap()));
        g.bench_function("parse+validate", |b| {
            b.iter(|| {
                let v: serde_json::Value = serde_json::from_str(black_box(body)).unwrap();
                t.validate(&v).unwrap();
            })
        });
        g.bench_function("check_in_place", |b| b.iter(|| black_box(t.check(black_box(body)).is_ok())));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
