//! Known gunicorn / uvicorn / Python signatures in a container's log tail. Pure.
//!
//! The lines are gunicorn's (19 to 26) and uvicorn's (0.30 to 0.55) as their source writes them.
//!
//! Worker-level timeouts and OOM kills inside a running container leave no trace in the pod
//! status; the app server's own log lines are the only evidence.

/// What a log tail shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogFindings {
    /// gunicorn "WORKER TIMEOUT (pid:N)": the master killed a worker that outlived `--timeout`.
    pub worker_timeouts: u32,
    /// The worker pids of those timeouts, in log order; they identify each one across samples.
    pub worker_timeout_pids: Vec<u32>,
    /// gunicorn "Worker (pid:N) was sent SIGKILL! Perhaps out of memory?" for a pid with no
    /// WORKER TIMEOUT before it: the kernel killed the worker. gunicorn prints the same line for
    /// the SIGKILL it sends after a timeout itself; that one is part of the timeout.
    pub worker_oom_kills: u32,
    pub worker_oom_pids: Vec<u32>,
    /// uvicorn's supervisor "Child process [N] died": it replaced worker process N, which did
    /// not answer its ping within `--timeout-worker-healthcheck` (the supervisor SIGKILLs it
    /// first) or had already exited.
    pub replaced_worker_pids: Vec<u32>,
    /// uvicorn 0.50+ "Child process [N] failed to start, stopping the parent process".
    pub worker_failed_to_start: bool,
    pub worker_failed_to_boot: bool,
    pub app_failed_to_load: bool,
    /// asyncio "Task was destroyed but it is pending!": shutdown cut short.
    pub pending_task_destroyed: bool,
    /// The last line of the last Python traceback, e.g. `ModuleNotFoundError: No module named 'x'`.
    pub last_exception: Option<String>,
}

/// Bytes of log scanned per sample; enough for a traceback, bounded for memory.
pub const TAIL_BYTES: usize = 16 * 1024;

/// The end of `log`, at most `max` bytes, from the start of a line when one starts inside them.
pub fn last_bytes(log: &str, max: usize) -> &str {
    if log.len() <= max {
        return log;
    }
    let mut cut = log.len() - max;
    while !log.is_char_boundary(cut) {
        cut += 1;
    }
    let tail = &log[cut..];
    // The cut usually falls inside a line; start at the next one unless the last line is all.
    match tail.find('\n') {
        Some(newline) if newline + 1 < tail.len() => &tail[newline + 1..],
        _ => tail,
    }
}

/// How many lines to ask for again when an answer of `got` bytes to a request of `lines` lines
/// filled the byte limit: the kubelet cut it at its end, where the last words are. `None` when
/// the answer is whole, or no fewer lines can be asked for.
pub fn fewer_lines(lines: i64, got: usize, limit: usize) -> Option<i64> {
    (got >= limit && lines > 1).then(|| (lines / 4).max(1))
}

/// The text lines of one log line: itself, or for a structured (JSON) line its message and
/// the lines of its traceback.
fn text_lines(line: &str) -> Vec<String> {
    const MESSAGE: [&str; 4] = ["message", "msg", "event", "log"];
    const TRACEBACK: [&str; 5] = [
        "exc_info",
        "exception",
        "exc_text",
        "stack_trace",
        "traceback",
    ];
    let trimmed = line.trim_start();
    if trimmed.starts_with('{')
        && let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(trimmed)
    {
        let text = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| fields.get(*k).and_then(serde_json::Value::as_str))
        };
        let mut lines: Vec<String> = text(&MESSAGE)
            .into_iter()
            .flat_map(str::lines)
            .map(str::to_string)
            .collect();
        if let Some(traceback) = text(&TRACEBACK) {
            lines.extend(traceback.lines().map(str::to_string));
        }
        return lines;
    }
    vec![line.to_string()]
}

pub fn scan(log: &str) -> LogFindings {
    let mut findings = LogFindings::default();
    let mut in_traceback = false;
    for line in log.lines().flat_map(text_lines) {
        let line = line.as_str();
        if line.contains("WORKER TIMEOUT") {
            findings.worker_timeouts += 1;
            findings.worker_timeout_pids.extend(pid_in(line));
        }
        if line.contains("Perhaps out of memory?") {
            let pid = pid_in(line);
            let after_timeout = pid.is_some_and(|pid| findings.worker_timeout_pids.contains(&pid));
            if !after_timeout {
                findings.worker_oom_kills += 1;
                findings.worker_oom_pids.extend(pid);
            }
        }
        if line.contains("Child process [") {
            if line.contains("] died") {
                findings.replaced_worker_pids.extend(bracketed_pid(line));
            } else if line.contains("] failed to start") {
                findings.worker_failed_to_start = true;
            }
        }
        if line.contains("Worker failed to boot") {
            findings.worker_failed_to_boot = true;
        }
        if line.contains("App failed to load") {
            findings.app_failed_to_load = true;
        }
        if line.contains("Task was destroyed but it is pending!") {
            findings.pending_task_destroyed = true;
        }
        if line.starts_with("Traceback (most recent call last):") {
            in_traceback = true;
            continue;
        }
        // A traceback ends with its first unindented line: the exception.
        if in_traceback
            && !line.starts_with(' ')
            && !line.starts_with('\t')
            && !line.trim().is_empty()
        {
            findings.last_exception = Some(line.trim().chars().take(300).collect());
            in_traceback = false;
        }
    }
    findings
}

/// The number in `(pid:N)`, as gunicorn writes it.
fn pid_in(line: &str) -> Option<u32> {
    let start = line.find("(pid:")? + "(pid:".len();
    let digits: String = line[start..]
        .chars()
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The number in `Child process [N]`, as uvicorn writes it.
fn bracketed_pid(line: &str) -> Option<u32> {
    let start = line.find("Child process [")? + "Child process [".len();
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One line for an abort's hint: the most specific thing the log says.
pub fn hint(findings: &LogFindings) -> Option<String> {
    let headline = if findings.worker_timeouts > 0 && findings.worker_oom_kills > 0 {
        Some(
            "gunicorn: WORKER TIMEOUT (gunicorn killed a worker that outlived --timeout), and a \
             worker killed with no timeout before it: out of memory",
        )
    } else if findings.worker_timeouts > 0 {
        Some(
            "gunicorn: WORKER TIMEOUT, gunicorn killed a worker that outlived --timeout (its \
             \"Perhaps out of memory?\" line is that kill, not an OOM)",
        )
    } else if findings.worker_oom_kills > 0 {
        Some("gunicorn: a worker was sent SIGKILL with no WORKER TIMEOUT before it: out of memory")
    } else if findings.worker_failed_to_start {
        Some("uvicorn: a worker process failed to start, and the supervisor stopped")
    } else if !findings.replaced_worker_pids.is_empty() {
        Some(
            "uvicorn: the supervisor replaced a worker process that stopped answering its ping \
             (--timeout-worker-healthcheck) or exited",
        )
    } else if findings.app_failed_to_load {
        Some("gunicorn: App failed to load")
    } else if findings.worker_failed_to_boot {
        Some("gunicorn: Worker failed to boot")
    } else if findings.pending_task_destroyed {
        Some("asyncio: Task was destroyed but it is pending (shutdown cut short)")
    } else {
        None
    };
    match (headline, &findings.last_exception) {
        (Some(h), Some(e)) => Some(format!("{h}; {e}")),
        (Some(h), None) => Some(h.to_string()),
        (None, Some(e)) => Some(e.clone()),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT_FAILURE: &str = "\
[2026-11-22 10:04:01 +0000] [1] [INFO] Starting gunicorn 23.0.0
[2026-11-22 10:04:01 +0000] [7] [ERROR] Exception in worker process
Traceback (most recent call last):
  File \"/usr/local/lib/python3.12/site-packages/gunicorn/arbiter.py\", line 608, in spawn_worker
    worker.init_process()
  File \"/app/shop/wsgi.py\", line 3, in <module>
    import stripe
ModuleNotFoundError: No module named 'stripe'
[2026-11-22 10:04:01 +0000] [7] [INFO] Worker exiting (pid: 7)
[2026-11-22 10:04:02 +0000] [1] [ERROR] Worker (pid:7) exited with code 3
[2026-11-22 10:04:02 +0000] [1] [ERROR] Shutting down: Master
[2026-11-22 10:04:02 +0000] [1] [ERROR] Reason: Worker failed to boot.
";

    const DEATH_SPIRAL: &str = "\
[2026-11-22 10:05:31 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:9)
[2026-11-22 10:05:32 +0000] [1] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?
[2026-11-22 10:05:32 +0000] [12] [INFO] Booting worker with pid: 12
[2026-11-22 10:06:03 +0000] [1] [CRITICAL] WORKER TIMEOUT (pid:12)
";

    #[test]
    fn boot_failure_with_its_exception() {
        let f = scan(BOOT_FAILURE);
        assert!(f.worker_failed_to_boot);
        assert_eq!(
            f.last_exception.as_deref(),
            Some("ModuleNotFoundError: No module named 'stripe'")
        );
        assert_eq!(
            hint(&f).as_deref(),
            Some("gunicorn: Worker failed to boot; ModuleNotFoundError: No module named 'stripe'")
        );
    }

    #[test]
    fn worker_timeouts_and_oom_kills_are_counted() {
        let f = scan(DEATH_SPIRAL);
        // gunicorn's SIGKILL of pid 9 follows its timeout: no OOM.
        assert_eq!((f.worker_timeouts, f.worker_oom_kills), (2, 0));
        assert_eq!(f.worker_timeout_pids, [9, 12]);
        assert!(f.worker_oom_pids.is_empty());
        let h = hint(&f).unwrap();
        assert!(
            h.contains("WORKER TIMEOUT") && h.contains("not an OOM"),
            "{h}"
        );
        assert_eq!(pid_in("Worker (pid: 31) was sent SIGKILL!"), Some(31));
        assert_eq!(pid_in("WORKER TIMEOUT (pid:x)"), None);
    }

    #[test]
    fn a_sigkill_with_no_timeout_of_its_pid_is_an_oom_kill() {
        // A SIGKILL before the timeout of the same pid, and one of another pid.
        let f = scan(
            "[1] [ERROR] Worker (pid:9) was sent SIGKILL! Perhaps out of memory?\n\
             [1] [CRITICAL] WORKER TIMEOUT (pid:12)\n\
             [1] [ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?\n",
        );
        assert_eq!(f.worker_oom_pids, [9, 15]);
        assert_eq!(f.worker_timeout_pids, [12]);
        let h = hint(&f).unwrap();
        assert!(
            h.contains("WORKER TIMEOUT") && h.contains("out of memory"),
            "{h}"
        );
        let oom = scan("[1] [ERROR] Worker (pid:15) was sent SIGKILL! Perhaps out of memory?\n");
        assert_eq!(
            hint(&oom).as_deref(),
            Some(
                "gunicorn: a worker was sent SIGKILL with no WORKER TIMEOUT before it: out of memory"
            )
        );
    }

    /// uvicorn 0.55's supervisor, as `uvicorn --workers 2` logs: a worker that does not answer
    /// in time is SIGKILLed and replaced with no line of its own before "died".
    const SUPERVISOR: &str = "\
INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)
INFO:     Started parent process [1]
INFO:     Started server process [8]
INFO:     Waiting for application startup.
INFO:     Child process [9] died
INFO:     Started server process [12]
INFO:     Child process [12] died
";

    #[test]
    fn uvicorn_supervisor_replacements_are_read_by_pid() {
        let f = scan(SUPERVISOR);
        assert_eq!(f.replaced_worker_pids, [9, 12]);
        assert!(f.worker_timeout_pids.is_empty() && f.worker_oom_pids.is_empty());
        let h = hint(&f).unwrap();
        assert!(h.contains("--timeout-worker-healthcheck"), "{h}");
        let failed =
            scan("ERROR:    Child process [9] failed to start, stopping the parent process.\n");
        assert!(failed.worker_failed_to_start && failed.replaced_worker_pids.is_empty());
        assert_eq!(bracketed_pid("Child process [x] died"), None);
        // Its own lines are not read as a replacement.
        assert_eq!(
            scan(
                "INFO:     Terminated child process [9]\nINFO:     Waiting for child process [9]\n"
            ),
            LogFindings::default()
        );
    }

    #[test]
    fn shutdown_cut_short_and_clean_logs() {
        let f = scan("Task was destroyed but it is pending!\ntask: <Task pending name='Task-3'>");
        assert!(f.pending_task_destroyed);
        assert_eq!(
            scan("[INFO] Listening at: http://0.0.0.0:8000\n"),
            LogFindings::default()
        );
        assert_eq!(hint(&LogFindings::default()), None);
    }

    #[test]
    fn the_end_of_a_long_log_is_kept_from_a_line_start() {
        let log = "first line\nsecond line\nlast words\n";
        assert_eq!(last_bytes(log, 1000), log);
        assert_eq!(last_bytes(log, 15), "last words\n");
        // One line longer than the budget: its end is all there is.
        assert_eq!(last_bytes("abcdefghij", 4), "ghij");
        // Never a cut inside a character.
        assert_eq!(last_bytes("ééé", 3), "é");
    }

    #[test]
    fn a_cut_answer_is_asked_for_again_with_fewer_lines() {
        assert_eq!(fewer_lines(200, 65_536, 65_536), Some(50));
        assert_eq!(fewer_lines(3, 65_536, 65_536), Some(1));
        assert_eq!(fewer_lines(200, 4_000, 65_536), None);
        assert_eq!(fewer_lines(1, 65_536, 65_536), None);
    }

    #[test]
    fn json_log_lines_are_scanned_by_their_message_and_traceback() {
        let log = r#"{"asctime":"2026-11-22 10:05:31","levelname":"CRITICAL","message":"WORKER TIMEOUT (pid:9)"}
{"levelname":"ERROR","msg":"Worker (pid:9) was sent SIGKILL! Perhaps out of memory?"}
{"levelname":"ERROR","message":"Exception in worker process","exc_info":"Traceback (most recent call last):\n  File \"/app/shop/wsgi.py\", line 3, in <module>\n    import stripe\nModuleNotFoundError: No module named 'stripe'"}
{"levelname":"ERROR","message":"Reason: Worker failed to boot."}
"#;
        let f = scan(log);
        assert_eq!(f.worker_timeout_pids, [9]);
        assert!(f.worker_oom_pids.is_empty(), "{f:?}");
        assert!(f.worker_failed_to_boot);
        assert_eq!(
            f.last_exception.as_deref(),
            Some("ModuleNotFoundError: No module named 'stripe'")
        );
        // A line that only looks like JSON is read as text.
        assert_eq!(
            scan("{not json WORKER TIMEOUT (pid:4)").worker_timeout_pids,
            [4]
        );
    }
}
