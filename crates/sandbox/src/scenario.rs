//! Scenarios: how the simulated app behaves — boot time and contention, probe results, exit
//! codes, memory growth, SIGTERM handling — and what happens to the pool during the run.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Seconds a boot takes with no other pod of the pool booting.
    pub boot_seconds: f64,
    /// How much each other pod booting at once slows a boot (0.5 = half as fast with two).
    pub boot_contention: f64,
    /// Per-pod randomness of the boot time, as a fraction (0.1 = ±10%).
    pub boot_jitter: f64,
    /// The app server exits with this code when its boot ends instead of serving (3 = gunicorn's
    /// "Worker failed to boot").
    pub boot_exit_code: Option<i32>,
    /// Liveness starts failing after the pod has served this long.
    pub liveness_fails_after_seconds: Option<f64>,
    /// Every serving pod handles requests this slow, one after another. gunicorn's `sync`
    /// worker is killed by `--timeout` in the middle of one that takes longer; under any other
    /// worker class (and uvicorn) nothing cuts it short.
    pub slow_request_seconds: Option<f64>,
    /// Every serving celery worker runs tasks this long, one after another; on SIGTERM its warm
    /// shutdown stops taking tasks and waits for the one running.
    pub task_seconds: Option<f64>,
    /// A task arrives for each celery pool child this often (at most one at a time); unset, the
    /// next arrives as soon as the last one ends.
    pub task_every_seconds: Option<f64>,
    /// The broker is unreachable for the first this many seconds of the run: a celery worker
    /// booting then logs `consumer: Cannot connect to …` every 2 s and finishes its boot only
    /// once the broker is back.
    pub broker_down_seconds: Option<f64>,
    pub memory: Option<Memory>,
    /// The app ignores SIGTERM; the kubelet SIGKILLs it when the grace period ends.
    pub ignore_sigterm: bool,
    /// Seconds the app takes to exit after SIGTERM when it honours it.
    pub shutdown_seconds: f64,
    /// The init Job's container.
    pub init: InitBehaviour,
    /// Changes made to the pool during the run, like `kubectl scale`.
    pub actions: Vec<Action>,
    /// Simulated seconds when `--duration` is not given.
    pub duration_seconds: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Memory {
    /// Resident memory when serving starts, in MiB.
    #[serde(rename = "startMiB", alias = "startMib")]
    pub start_mib: f64,
    /// Growth while serving, in MiB per minute; past the container's limit (without one, past
    /// the node's memory) the kernel OOM-kills it.
    #[serde(rename = "growthMiBPerMinute", alias = "growthMibPerMinute")]
    pub growth_mib_per_minute: f64,
}

/// Longest run the sandbox simulates: a day of virtual time.
pub const MAX_DURATION_SECONDS: u64 = 86_400;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct InitBehaviour {
    pub seconds: f64,
    pub exit_code: i32,
}

impl Default for InitBehaviour {
    fn default() -> Self {
        InitBehaviour {
            seconds: 10.0,
            exit_code: 0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Action {
    pub at_seconds: u64,
    /// Scale the pool to this many replicas.
    #[serde(default)]
    pub replicas: Option<i32>,
    /// Scale the pool by this factor of its current replicas (0.5 halves it).
    #[serde(default)]
    pub scale_factor: Option<f64>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "healthy".into(),
            description: "every boot takes about 20 s and succeeds; pods serve and stay healthy"
                .into(),
            boot_seconds: 20.0,
            boot_contention: 0.0,
            boot_jitter: 0.2,
            boot_exit_code: None,
            liveness_fails_after_seconds: None,
            slow_request_seconds: None,
            task_seconds: None,
            task_every_seconds: None,
            broker_down_seconds: None,
            memory: None,
            ignore_sigterm: false,
            shutdown_seconds: 2.0,
            init: InitBehaviour::default(),
            actions: Vec::new(),
            duration_seconds: 600,
        }
    }
}

pub const BUILT_IN: [&str; 9] = [
    "healthy",
    "slow-boot",
    "boot-failure",
    "oom",
    "ignore-sigterm",
    "boot-storm",
    "long-tasks",
    "broker-down",
    "child-memory",
];

impl Scenario {
    /// A built-in scenario by name.
    pub fn built_in(name: &str) -> Option<Scenario> {
        let base = Scenario::default();
        let scenario = match name {
            "healthy" => base,
            "slow-boot" => Scenario {
                name: name.into(),
                description: "every boot takes 10 minutes, longer than any startup window".into(),
                boot_seconds: 600.0,
                boot_jitter: 0.0,
                ..base
            },
            "boot-failure" => Scenario {
                name: name.into(),
                description: "the app server exits 3 (worker failed to boot) on every boot".into(),
                boot_seconds: 5.0,
                boot_exit_code: Some(3),
                ..base
            },
            "oom" => Scenario {
                name: name.into(),
                description: "memory grows by 200 MiB a minute while serving until the limit is passed".into(),
                boot_seconds: 15.0,
                memory: Some(Memory {
                    start_mib: 300.0,
                    growth_mib_per_minute: 200.0,
                }),
                ..base
            },
            "ignore-sigterm" => Scenario {
                name: name.into(),
                description: "pods ignore SIGTERM; after 4 minutes the pool is scaled to half, so the kubelet SIGKILLs the removed pods when the grace period ends".into(),
                boot_seconds: 15.0,
                ignore_sigterm: true,
                actions: vec![Action {
                    at_seconds: 240,
                    replicas: None,
                    scale_factor: Some(0.5),
                }],
                ..base
            },
            "boot-storm" => Scenario {
                name: name.into(),
                description: "a boot takes 20 s alone and 20 s more for each other pod booting at once (shared database, migrations, CPU)".into(),
                boot_seconds: 20.0,
                boot_contention: 1.0,
                boot_jitter: 0.1,
                ..base
            },
            "long-tasks" => Scenario {
                name: name.into(),
                description: "celery workers run 4-minute tasks back to back; after 5 minutes the pool is scaled to half: each removed worker's warm shutdown waits for its task, and the kubelet SIGKILLs it if the grace period ends first".into(),
                boot_seconds: 15.0,
                task_seconds: Some(240.0),
                actions: vec![Action {
                    at_seconds: 300,
                    replicas: None,
                    scale_factor: Some(0.5),
                }],
                duration_seconds: 900,
                ..base
            },
            "broker-down" => Scenario {
                name: name.into(),
                description: "the broker is unreachable for the first 2 minutes: celery workers cannot finish booting until it is back".into(),
                boot_seconds: 10.0,
                broker_down_seconds: Some(120.0),
                ..base
            },
            "child-memory" => Scenario {
                name: name.into(),
                description: "each celery pool child starts at 60 MiB and grows by 40 MiB a minute while it runs 20 s tasks: --max-memory-per-child recycles it in time, or the kernel OOM-kills it when the children no longer fit".into(),
                boot_seconds: 15.0,
                task_seconds: Some(20.0),
                memory: Some(Memory {
                    start_mib: 60.0,
                    growth_mib_per_minute: 40.0,
                }),
                duration_seconds: 900,
                ..base
            },
            _ => return None,
        };
        Some(scenario)
    }

    /// A scenario from YAML; unset fields take the `healthy` values.
    pub fn from_yaml(text: &str) -> Result<Scenario, String> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let mut scenario: Scenario = serde_path_to_error::deserialize(deserializer)
            .map_err(|e| format!("scenario: {}: {}", e.path(), e.inner()))?;
        if scenario.name.is_empty() || scenario.name == "healthy" {
            scenario.name = "custom".into();
        }
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn validate(&self) -> Result<(), String> {
        let checks = [
            (
                self.boot_seconds.is_finite() && self.boot_seconds >= 0.0,
                "bootSeconds must be 0 or more",
            ),
            (
                self.boot_contention.is_finite() && self.boot_contention >= 0.0,
                "bootContention must be 0 or more",
            ),
            (
                (0.0..1.0).contains(&self.boot_jitter),
                "bootJitter must be at least 0 and below 1",
            ),
            (
                self.shutdown_seconds.is_finite() && self.shutdown_seconds >= 0.0,
                "shutdownSeconds must be 0 or more",
            ),
            (
                self.task_seconds.is_none_or(|t| t.is_finite() && t > 0.0),
                "taskSeconds must be more than 0",
            ),
            (
                self.task_every_seconds
                    .is_none_or(|t| t.is_finite() && t > 0.0),
                "taskEverySeconds must be more than 0",
            ),
            (
                self.broker_down_seconds
                    .is_none_or(|t| t.is_finite() && t >= 0.0),
                "brokerDownSeconds must be 0 or more",
            ),
            (
                self.init.seconds.is_finite() && self.init.seconds >= 0.0,
                "init.seconds must be 0 or more",
            ),
            (
                self.duration_seconds > 0 && self.duration_seconds <= MAX_DURATION_SECONDS,
                "durationSeconds must be more than 0 and at most 86400 (a day)",
            ),
            (
                self.memory.as_ref().is_none_or(|m| {
                    m.start_mib.is_finite()
                        && m.growth_mib_per_minute.is_finite()
                        && m.start_mib >= 0.0
                }),
                "memory values must be finite and startMiB 0 or more",
            ),
            (
                self.actions.iter().all(|a| {
                    a.replicas.is_some_and(|r| r >= 0)
                        ^ a.scale_factor.is_some_and(|f| f.is_finite() && f >= 0.0)
                }),
                "each action sets exactly one of replicas (0 or more) and scaleFactor (0 or more)",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(format!("scenario: {message}")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_exists_and_is_valid() {
        for name in BUILT_IN {
            let scenario = Scenario::built_in(name).expect(name);
            assert_eq!(scenario.name, name);
            scenario.validate().expect(name);
        }
        assert!(Scenario::built_in("nope").is_none());
    }

    #[test]
    fn a_user_scenario_names_the_bad_field() {
        let scenario = Scenario::from_yaml("bootSeconds: 30\nbootExitCode: 4\n").expect("valid");
        assert_eq!(scenario.boot_exit_code, Some(4));
        assert_eq!(scenario.name, "custom");
        let error = Scenario::from_yaml("bootSecs: 3\n").expect_err("unknown field");
        assert!(error.contains("bootSecs"), "{error}");
        let error = Scenario::from_yaml("bootJitter: 2\n").expect_err("invalid");
        assert!(error.contains("bootJitter"), "{error}");
    }
}
