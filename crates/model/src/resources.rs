//! Resource quantities: CPU units and MiB, as task definitions write them.
//!
//! ECS accepts a task-level `cpu` as CPU units (`"1024"`) or vCPUs (`"1 vCPU"`,
//! `"0.5 vcpu"`), and a task-level `memory` as MiB (`"2048"`) or GB (`"2GB"`,
//! `"2 GB"`); it stores the units/MiB form. These are the parsers.

use crate::error::EcsError;

/// CPU units: 1,024 per vCPU.
pub type CpuUnits = u32;
/// Memory in MiB.
pub type MemoryMib = u64;

fn split_unit(s: &str) -> (&str, String) {
    let t = s.trim();
    let idx = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    (&t[..idx], t[idx..].trim().to_ascii_lowercase())
}

/// Parses a task-level `cpu` value into CPU units.
pub fn parse_cpu(s: &str) -> Result<CpuUnits, EcsError> {
    let bad = || {
        EcsError::client(format!("Invalid 'cpu' setting for task: '{s}'. Specify CPU units (for example '1024') or vCPUs (for example '1 vCPU')."))
    };
    let (num, unit) = split_unit(s);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let units = match unit.as_str() {
        "" => v,
        "vcpu" | "vcpus" => v * 1024.0,
        _ => return Err(bad()),
    };
    if !units.is_finite() || !(1.0..=f64::from(u32::MAX)).contains(&units) || units.fract() != 0.0 {
        return Err(bad());
    }
    Ok(units as CpuUnits)
}

/// Parses a task-level `memory` value into MiB.
pub fn parse_memory(s: &str) -> Result<MemoryMib, EcsError> {
    let bad = || {
        EcsError::client(format!("Invalid 'memory' setting for task: '{s}'. Specify MiB (for example '2048') or GB (for example '2GB')."))
    };
    let (num, unit) = split_unit(s);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let mib = match unit.as_str() {
        "" | "mib" | "mb" => v,
        "gb" | "gib" => v * 1024.0,
        _ => return Err(bad()),
    };
    if !mib.is_finite() || !(1.0..=1e12).contains(&mib) || mib.fract() != 0.0 {
        return Err(bad());
    }
    Ok(mib as MemoryMib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpu_forms() {
        assert_eq!(parse_cpu("1024").ok(), Some(1024));
        assert_eq!(parse_cpu("1 vCPU").ok(), Some(1024));
        assert_eq!(parse_cpu("0.25 vcpu").ok(), Some(256));
        assert_eq!(parse_cpu(" 2vCPU ").ok(), Some(2048));
        for bad in ["", "0", "-1", "abc", "1 core", "1.5", "0.0001 vCPU"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory_forms() {
        assert_eq!(parse_memory("512").ok(), Some(512));
        assert_eq!(parse_memory("2GB").ok(), Some(2048));
        assert_eq!(parse_memory("0.5 GB").ok(), Some(512));
        for bad in ["", "0", "x", "1 TB", "-5"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,20}") {
            let _ = parse_cpu(&s);
            let _ = parse_memory(&s);
        }

        #[test]
        fn units_round_trip(n in 1u32..1_000_000) {
            prop_assert_eq!(parse_cpu(&n.to_string()).ok(), Some(n));
            prop_assert_eq!(parse_memory(&n.to_string()).ok(), Some(u64::from(n)));
        }
    }
}
