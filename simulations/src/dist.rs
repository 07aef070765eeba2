//! Random durations (of tasks, of network hops): constant, exponential, uniform, Pareto, or a
//! replayed CSV trace; parsed from short specs such as `exp:100` (milliseconds).

use std::path::Path;
use std::sync::Arc;

use rand::Rng;

use crate::error::SimError;

/// Simulated time in nanoseconds.
pub type Nanos = u64;

/// Nanoseconds in a millisecond.
pub const MS: f64 = 1e6;

/// A distribution of durations, in milliseconds.
#[derive(Debug, Clone)]
pub enum Dist {
    Const(f64),
    Exp {
        mean: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// Pareto with the given mean and tail index `shape` (> 1; heavy-tailed below 2).
    Pareto {
        mean: f64,
        shape: f64,
    },
    /// Durations replayed in file order, from the start again when the trace runs out.
    Trace {
        name: Arc<str>,
        values: Arc<[f64]>,
    },
}

impl Dist {
    /// Parses `const:MS`, `exp:MS`, `uniform:LO:HI`, `pareto:MEAN:SHAPE` or `trace:FILE`.
    pub fn parse(spec: &str) -> Result<Self, SimError> {
        let bad = |why: &str| SimError::BadDistribution {
            spec: spec.to_owned(),
            why: why.into(),
        };
        let (kind, rest) = spec.split_once(':').ok_or_else(|| bad("missing ':'"))?;
        if kind == "trace" {
            return read_trace(Path::new(rest));
        }
        let nums: Vec<f64> = rest
            .split(':')
            .map(|s| s.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad("not a number"))?;
        if nums.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(bad("numbers must be finite and not negative"));
        }
        match (kind, nums.as_slice()) {
            ("const", [v]) => Ok(Dist::Const(*v)),
            ("exp", [mean]) => Ok(Dist::Exp { mean: *mean }),
            ("uniform", [lo, hi]) if lo <= hi => Ok(Dist::Uniform { lo: *lo, hi: *hi }),
            ("pareto", [mean, shape]) if *shape > 1.0 && *mean > 0.0 => Ok(Dist::Pareto {
                mean: *mean,
                shape: *shape,
            }),
            ("pareto", _) => Err(bad("pareto needs MEAN > 0 and SHAPE > 1")),
            ("uniform", _) => Err(bad("uniform needs LO <= HI")),
            _ => Err(bad("unknown kind or wrong number of parameters")),
        }
    }

    /// The mean, in milliseconds.
    pub fn mean(&self) -> f64 {
        match self {
            Dist::Const(v) => *v,
            Dist::Exp { mean } | Dist::Pareto { mean, .. } => *mean,
            Dist::Uniform { lo, hi } => (lo + hi) / 2.0,
            Dist::Trace { values, .. } => values.iter().sum::<f64>() / values.len() as f64,
        }
    }

    /// A short label for tables (`exp`, `pareto1.5`, the trace's file name).
    pub fn label(&self) -> String {
        match self {
            Dist::Const(_) => "const".into(),
            Dist::Exp { .. } => "exp".into(),
            Dist::Uniform { .. } => "uniform".into(),
            Dist::Pareto { shape, .. } => format!("pareto{shape}"),
            Dist::Trace { name, .. } => name.to_string(),
        }
    }

    /// Draws one duration in nanoseconds; `cursor` is the replay position of a trace.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R, cursor: &mut usize) -> Nanos {
        let ms = match self {
            Dist::Const(v) => *v,
            Dist::Exp { mean } => -mean * (1.0 - rng.random::<f64>()).ln(),
            Dist::Uniform { lo, hi } => lo + (hi - lo) * rng.random::<f64>(),
            Dist::Pareto { mean, shape } => {
                let scale = mean * (shape - 1.0) / shape;
                scale / (1.0 - rng.random::<f64>()).powf(1.0 / shape)
            }
            Dist::Trace { values, .. } => {
                let v = values[*cursor % values.len()];
                *cursor = (*cursor + 1) % values.len();
                v
            }
        };
        // Saturating float-to-int cast: a huge Pareto draw becomes u64::MAX, never wraps.
        (ms * MS).round() as Nanos
    }
}

/// Reads a trace: one duration in milliseconds per line, in the first comma-separated column;
/// a first line that is not a number is a header.
fn read_trace(path: &Path) -> Result<Dist, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let field = line.split(',').next().unwrap_or("").trim();
        if field.is_empty() {
            continue;
        }
        match field.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => values.push(v),
            Ok(_) => {
                let why = format!("{field:?} is not a duration >= 0 in milliseconds");
                return Err(SimError::BadLine {
                    path: path.to_owned(),
                    line: i + 1,
                    why,
                });
            }
            Err(_) if i == 0 => {}
            Err(_) => {
                let why = format!("{field:?} is not a number");
                return Err(SimError::BadLine {
                    path: path.to_owned(),
                    line: i + 1,
                    why,
                });
            }
        }
    }
    if values.is_empty() {
        let why = "no durations in the trace".to_owned();
        return Err(SimError::BadLine {
            path: path.to_owned(),
            line: 0,
            why,
        });
    }
    let name = path
        .file_name()
        .map_or("trace".into(), |n| n.to_string_lossy().into());
    Ok(Dist::Trace {
        name,
        values: values.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn mean_of(d: &Dist, n: usize) -> f64 {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut cursor = 0;
        (0..n)
            .map(|_| d.sample(&mut rng, &mut cursor) as f64 / MS)
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        assert!(matches!(Dist::parse("exp:100").unwrap(), Dist::Exp { mean } if mean == 100.0));
        assert!(matches!(
            Dist::parse("pareto:100:1.5").unwrap(),
            Dist::Pareto { .. }
        ));
        assert!(Dist::parse("exp").is_err());
        assert!(Dist::parse("exp:-1").is_err());
        assert!(Dist::parse("pareto:100:1").is_err());
        assert!(Dist::parse("uniform:2:1").is_err());
        assert!(Dist::parse("weibull:1").is_err());
        assert!(Dist::parse("trace:/nonexistent/trace.csv").is_err());
    }

    #[test]
    fn sample_means_match() {
        for spec in ["const:5", "exp:100", "uniform:1:3", "pareto:100:2.5"] {
            let d = Dist::parse(spec).unwrap();
            let m = mean_of(&d, 200_000);
            assert!(
                (m - d.mean()).abs() < 0.05 * d.mean(),
                "{spec}: {m} vs {}",
                d.mean()
            );
        }
    }

    #[test]
    fn a_trace_replays_in_order_and_skips_its_header() {
        let dir = std::env::temp_dir().join(format!("peer-sim-trace-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.csv");
        std::fs::write(&path, "duration_ms,name\n10,a\n\n30,b\n").unwrap();
        let d = Dist::parse(&format!("trace:{}", path.display())).unwrap();
        assert_eq!(d.mean(), 20.0);
        let mut rng = SmallRng::seed_from_u64(1);
        let mut cursor = 0;
        let got: Vec<_> = (0..3).map(|_| d.sample(&mut rng, &mut cursor)).collect();
        assert_eq!(got, [10_000_000, 30_000_000, 10_000_000]);
        std::fs::write(&path, "10\nx\n").unwrap();
        let err = Dist::parse(&format!("trace:{}", path.display())).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
