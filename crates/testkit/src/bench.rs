//! What the benchmarks of `make bench` share: their settings from the environment, the
//! median and spread of their rounds, and the report they append to.

use std::io::Write as _;

/// The value of variable `name` parsed, or `default` when it is unset or does not parse.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The median of `values` (the upper one of an even count).
///
/// # Panics
/// When `values` is empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The smallest and largest of `values`, as `min-max` without decimals.
pub fn spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.0}-{max:.0}")
}

/// Prints a benchmark's markdown `table` and appends it to the file `$BENCH_REPORT`
/// names, when set (`make bench` collects every benchmark's table there).
///
/// # Panics
/// When the report file cannot be written.
pub fn report(table: &str) {
    println!("{table}");
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open the report {path}: {e}"));
        writeln!(file, "{table}").unwrap_or_else(|e| panic!("cannot write the report {path}: {e}"));
        eprintln!("appended to {path}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_of_rounds() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < f64::EPSILON);
        assert!((median(&[4.0, 1.0, 3.0, 2.0]) - 3.0).abs() < f64::EPSILON);
        assert_eq!(spread(&[10.4, 2.6, 7.0]), "3-10");
    }
}
