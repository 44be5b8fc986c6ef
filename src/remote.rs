//! `swarm task ... --api URL`: the same commands through a running engine's JSON API
//! (`SWARM_API_TOKEN` when the engine needs one). I/O: HTTP.

use std::process::ExitCode;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::TaskCommand;

struct Api {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Api {
    fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token: std::env::var("SWARM_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            agent: config.into(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut response = match method {
            "GET" => {
                let mut r = self.agent.get(&url);
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.call()
            }
            _ => {
                let mut r = self.agent.post(&url).header("X-Swarm-Csrf", "cli");
                if let Some(a) = &auth {
                    r = r.header("Authorization", a);
                }
                r.send_json(body.unwrap_or(Value::Object(Default::default())))
            }
        }
        .with_context(|| format!("cannot reach the engine at {url}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !(200..300).contains(&status) {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(text);
            bail!("the engine answered {status}: {}", message.trim());
        }
        Ok(value)
    }
}

fn split_key(key: &str, project: Option<&str>) -> anyhow::Result<(String, String)> {
    match (project, key.split_once('/')) {
        (Some(p), _) => Ok((p.to_string(), key.to_string())),
        (None, Some((p, k))) => Ok((p.to_string(), k.to_string())),
        (None, None) => bail!("with --api, name the task as PROJECT/KEY or give --project"),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub fn task_command(base: &str, command: TaskCommand) -> anyhow::Result<ExitCode> {
    let api = Api::new(base);
    match command {
        TaskCommand::List {
            project,
            status,
            addressee,
            epic,
            limit,
            json,
        } => {
            let mut q = vec![format!("limit={}", limit.min(500))];
            for (k, v) in [
                ("project", project),
                (
                    "status",
                    status.map(|s| coding_swarm::spec::TaskState::from(s).as_str().to_string()),
                ),
                ("addressee", addressee),
                ("epic", epic),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let page = api.call("GET", &format!("/api/tasks?{}", q.join("&")), None)?;
            let tasks = page["tasks"].as_array().cloned().unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&tasks)?);
            } else {
                println!(
                    "{:<16} {:<28} {:<24} {:<12} {:>3} {:>3}",
                    "PROJECT", "KEY", "ADDRESSEE", "STATUS", "GEN", "ATT"
                );
                for t in tasks {
                    println!(
                        "{:<16} {:<28} {:<24} {:<12} {:>3} {:>3}",
                        t["project"].as_str().unwrap_or(""),
                        t["key"].as_str().unwrap_or(""),
                        t["addressee"].as_str().unwrap_or(""),
                        t["status"].as_str().unwrap_or(""),
                        t["generation"],
                        t["attempts"]
                    );
                }
            }
        }
        TaskCommand::Show { key, project, json } => {
            let (p, k) = split_key(&key, project.as_deref())?;
            let v = api.call("GET", &format!("/api/tasks/{}/{}", enc(&p), enc(&k)), None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let t = &v["task"];
                println!(
                    "{p}/{k}  {}  (generation {}, attempt {})",
                    t["status"].as_str().unwrap_or(""),
                    t["generation"],
                    t["attempts"]
                );
                if let Some(w) = v["waiting"].as_str() {
                    println!("waits: {w}");
                }
                if !t["result"].is_null() {
                    println!("result:\n{}", serde_json::to_string_pretty(&t["result"])?);
                }
                println!("prompt:\n{}", t["prompt"].as_str().unwrap_or("").trim_end());
                println!("events:");
                for e in v["events"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "  {}  {:<16} {}",
                        e["at"].as_str().unwrap_or(""),
                        e["kind"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    );
                }
            }
        }
        TaskCommand::Stop { key, project } => {
            let (p, k) = split_key(&key, project.as_deref())?;
            let v = api.call(
                "POST",
                &format!("/api/tasks/{}/{}/stop", enc(&p), enc(&k)),
                None,
            )?;
            if v["stopping"].as_bool() == Some(true) {
                println!("stop requested: the engine stops {p}/{k} now");
            } else {
                println!("{p}/{k} cancelled before it ran");
            }
        }
        TaskCommand::Retry { key, project } => {
            let (p, k) = split_key(&key, project.as_deref())?;
            let v = api.call(
                "POST",
                &format!("/api/tasks/{}/{}/retry", enc(&p), enc(&k)),
                None,
            )?;
            println!("{p}/{k} is pending again as generation {}", v["generation"]);
        }
        TaskCommand::Logs { key, project } => {
            let (p, k) = split_key(&key, project.as_deref())?;
            let v = api.call(
                "GET",
                &format!("/api/tasks/{}/{}/log", enc(&p), enc(&k)),
                None,
            )?;
            print!("{}", v.as_str().unwrap_or(""));
        }
    }
    Ok(ExitCode::SUCCESS)
}
