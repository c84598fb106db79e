//! Learning-rate schedules, evaluated per step on the host.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every_epochs` epochs (PyTorch's `StepLR`).
    Step {
        every_epochs: usize,
        gamma: f32,
    },
    /// Cosine from the base rate down to 0 at the end of the last step (`CosineAnnealingLR`
    /// with `T_max` = the steps after warmup).
    Cosine,
}

impl FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(
                "--schedule",
                format!("{s:?} is not a schedule; expected constant, step:EVERY_EPOCHS:GAMMA (e.g. step:2:0.5) or cosine"),
            )
        };
        match s {
            "constant" => Ok(Schedule::Constant),
            "cosine" => Ok(Schedule::Cosine),
            _ => {
                let parts: Vec<&str> = s.split(':').collect();
                if parts.len() != 3 || parts[0] != "step" {
                    return Err(bad());
                }
                let every_epochs: usize = parts[1].parse().map_err(|_| bad())?;
                let gamma: f32 = parts[2].parse().map_err(|_| bad())?;
                if every_epochs == 0 || !gamma.is_finite() || gamma < 0.0 {
                    return Err(bad());
                }
                Ok(Schedule::Step { every_epochs, gamma })
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { every_epochs, gamma } => write!(f, "step:{every_epochs}:{gamma}"),
            Schedule::Cosine => write!(f, "cosine"),
        }
    }
}

/// A schedule over a known run: `total_steps` steps, `steps_per_epoch` each epoch.
#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    pub base_lr: f32,
    pub schedule: Schedule,
    pub warmup_steps: usize,
    pub steps_per_epoch: usize,
    pub total_steps: usize,
}

impl LrSchedule {
    /// The rate for step `step` (0-based). Warmup rises linearly from 0: warmup step i uses
    /// `base · (i+1) / warmup`, so the last warmup step reaches the base rate; the schedule then
    /// runs over the remaining steps.
    pub fn lr(&self, step: usize) -> f32 {
        let base = self.base_lr as f64;
        if step < self.warmup_steps {
            return (base * (step + 1) as f64 / self.warmup_steps as f64) as f32;
        }
        let lr = match self.schedule {
            Schedule::Constant => base,
            Schedule::Step { every_epochs, gamma } => {
                let epoch = step / self.steps_per_epoch.max(1);
                base * (gamma as f64).powi((epoch / every_epochs) as i32)
            }
            Schedule::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let t = (step - self.warmup_steps) as f64 / span as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        lr as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(schedule: Schedule, warmup: usize) -> LrSchedule {
        LrSchedule {
            base_lr: 0.1,
            schedule,
            warmup_steps: warmup,
            steps_per_epoch: 10,
            total_steps: 40,
        }
    }

    #[test]
    fn parses_and_prints() {
        for s in ["constant", "cosine", "step:2:0.5"] {
            assert_eq!(s.parse::<Schedule>().unwrap().to_string(), s);
        }
        for bad in ["", "step", "step:0:0.5", "step:2", "step:x:0.5", "linear", "step:1:-2"] {
            let err = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(err.contains("--schedule"), "{err}");
        }
    }

    #[test]
    fn step_schedule_decays_per_epochs() {
        let s = sched(Schedule::Step { every_epochs: 2, gamma: 0.5 }, 0);
        assert_eq!(s.lr(0), 0.1);
        assert_eq!(s.lr(19), 0.1);
        assert!((s.lr(20) - 0.05).abs() < 1e-7);
        assert!((s.lr(39) - 0.05).abs() < 1e-7);
    }

    #[test]
    fn cosine_goes_from_base_towards_zero() {
        let s = sched(Schedule::Cosine, 0);
        assert_eq!(s.lr(0), 0.1);
        assert!((s.lr(20) - 0.05).abs() < 1e-6);
        assert!(s.lr(39) < 0.001 && s.lr(39) > 0.0);
        for i in 1..40 {
            assert!(s.lr(i) < s.lr(i - 1));
        }
    }

    #[test]
    fn warmup_rises_linearly_then_hands_over() {
        let s = sched(Schedule::Cosine, 4);
        assert!((s.lr(0) - 0.025).abs() < 1e-7);
        assert!((s.lr(3) - 0.1).abs() < 1e-7);
        assert_eq!(s.lr(4), 0.1);
        assert!(s.lr(5) < 0.1);
    }
}
