//! The instance commands, each a call (or a few) to vesseld's API.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context, Result};
use hyper::Method;
use serde_json::{json, Value};
use vessel_api::{
    ExecConfig, Info, Instance, InstanceConfig, InstanceUpdate, Kind, Limits, LogRecord, Operation,
    PortMapping, RestartPolicy, StateChange, Stats, Top, Ulimit, VmSpec, WaitResult,
};

use crate::cli::{CreateArgs, ExecArgs, Global, LimitArgs, LogsArgs, UpdateArgs};
use crate::client::{encode, Client};
use crate::format::{self, Format};
use crate::output::{age, human_size, out, table};

const NO_BODY: Option<&()> = None;

fn path(name: &str, rest: &str) -> String {
    format!("/1.0/instances/{}{rest}", encode(name))
}

fn bytes(flag: &str, v: &Option<String>) -> Result<Option<i64>> {
    v.as_deref()
        .map(|s| vessel_runtime::units::parse_bytes(s).map_err(|e| anyhow!("Invalid {flag} {s:?}: {e}")))
        .transpose()
}

/// DEVICE:RATE flags (a size such as 10mb for bytes, a plain number for operations); none given: unset.
fn rates(flag: &str, v: &[String], sizes: bool) -> Result<Option<Vec<vessel_api::DeviceRate>>> {
    if v.is_empty() {
        return Ok(None);
    }
    v.iter()
        .map(|s| {
            let bad = || anyhow!("Invalid {flag} {s:?}: use DEVICE:RATE, e.g. /dev/vda:10mb");
            let (path, rate) = s.rsplit_once(':').ok_or_else(bad)?;
            let rate = if sizes {
                vessel_runtime::units::parse_bytes(rate).map_err(|_| bad())?
            } else {
                rate.parse::<i64>().map_err(|_| bad())?
            };
            Ok(vessel_api::DeviceRate {
                path: path.to_string(),
                rate: u64::try_from(rate).map_err(|_| bad())?,
            })
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn limits_of(l: &LimitArgs) -> Result<Limits> {
    Ok(Limits {
        memory: bytes("--memory", &l.memory)?,
        memory_swap: bytes("--memory-swap", &l.memory_swap)?,
        cpus: l.cpus,
        cpu_shares: l.cpu_shares,
        cpuset_cpus: l.cpuset_cpus.clone(),
        pids: l.pids_limit,
        blkio_weight: l.blkio_weight,
        device_read_bps: rates("--device-read-bps", &l.device_read_bps, true)?,
        device_write_bps: rates("--device-write-bps", &l.device_write_bps, true)?,
        device_read_iops: rates("--device-read-iops", &l.device_read_iops, false)?,
        device_write_iops: rates("--device-write-iops", &l.device_write_iops, false)?,
    })
}

fn ulimit(s: &str) -> Result<Ulimit> {
    let bad = || anyhow!("Invalid --ulimit {s:?}: use NAME=SOFT[:HARD], e.g. nofile=1024:2048");
    let (name, values) = s.split_once('=').ok_or_else(bad)?;
    let (soft, hard) = match values.split_once(':') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let v = values.parse().map_err(|_| bad())?;
            (v, v)
        }
    };
    Ok(Ulimit {
        name: name.into(),
        soft,
        hard,
    })
}

/// The API's create body from the command line.
pub fn config_of(a: &CreateArgs) -> Result<InstanceConfig> {
    let mut env = Vec::new();
    for kv in &a.env {
        match kv.split_once('=') {
            Some(("", _)) => return Err(anyhow!("Invalid -e {kv:?}: the name before '=' is empty")),
            Some(_) => env.push(kv.clone()),
            // `-e NAME` passes our value, or nothing when we have none (docker's behaviour).
            None => {
                if let Ok(v) = std::env::var(kv) {
                    env.push(format!("{kv}={v}"));
                }
            }
        }
    }
    let labels = a
        .label
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            if k.is_empty() {
                Err(anyhow!("Invalid --label {l:?}: use KEY=VALUE"))
            } else {
                Ok((k.to_string(), v.to_string()))
            }
        })
        .collect::<Result<BTreeMap<_, _>>>()?;
    let (network_mode, networks) = crate::networks::requests(a)?;
    Ok(InstanceConfig {
        name: a.name.clone(),
        image: a.image.clone().unwrap_or_default(),
        kind: if a.vm.vm { Kind::Vm } else { Kind::Container },
        vm: vm_spec(&a.vm)?,
        command: a.command.clone(),
        entrypoint: a
            .entrypoint
            .as_ref()
            .map(|e| if e.is_empty() { Vec::new() } else { vec![e.clone()] }),
        env,
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        stdin: a.interactive,
        labels,
        restart: RestartPolicy::parse(&a.restart).map_err(|e| anyhow!(e))?,
        limits: limits_of(&a.limits)?,
        read_only: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        ulimits: a.ulimit.iter().map(|u| ulimit(u)).collect::<Result<_>>()?,
        tmpfs: a.tmpfs.clone(),
        volumes: a.volume.clone(),
        network_mode,
        networks,
        ports: a
            .publish
            .iter()
            .map(|p| PortMapping::parse(p).map_err(|e| anyhow!(e)))
            .collect::<Result<_>>()?,
        dns: a.dns.clone(),
        net_rate: a.net_rate.as_deref().map(parse_rate).transpose()?,
        userns: a.userns.clone(),
        init: a.init,
        auto_remove: a.rm,
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
    })
}

/// A VM's boot parts (none for a container).
fn vm_spec(a: &crate::cli::VmArgs) -> Result<Option<VmSpec>> {
    if !a.vm {
        return Ok(None);
    }
    let absolute = |p: &str| -> Result<String> {
        let (path, options) = p.split_once(',').map_or((p, None), |(a, b)| (a, Some(b)));
        let full = if path.starts_with('/') {
            path.to_string()
        } else {
            std::env::current_dir()
                .context("the current directory")?
                .join(path)
                .display()
                .to_string()
        };
        Ok(match options {
            Some(o) => format!("{full},{o}"),
            None => full,
        })
    };
    Ok(Some(VmSpec {
        kernel: a.kernel.as_deref().map(absolute).transpose()?,
        initrd: a.initrd.as_deref().map(absolute).transpose()?,
        cmdline: a.kernel_args.clone(),
        disks: a.disk.iter().map(|d| absolute(d)).collect::<Result<_>>()?,
        pvm_guest_kernel: a.pvm_guest_kernel,
        disk_size: a
            .disk_size
            .as_deref()
            .map(|s| {
                vessel_runtime::units::parse_bytes(s)
                    .ok()
                    .and_then(|b| u64::try_from(b).ok())
                    .filter(|b| *b > 0)
                    .ok_or_else(|| anyhow!("Invalid --disk-size {s:?}: use bytes or a size like 2g"))
            })
            .transpose()?,
    }))
}

/// Create the instance; when vesseld has to pull its image first, wait on that operation (progress on
/// stderr, Ctrl-C cancels it).
pub fn create(c: &Client, a: &CreateArgs) -> Result<Instance> {
    let (status, v) = c.call_status(
        Method::POST,
        &format!("/1.0/instances?pull={}", encode(&a.pull)),
        Some(&config_of(a)?),
    )?;
    if status != hyper::StatusCode::ACCEPTED {
        return Ok(serde_json::from_value(v)?);
    }
    let op: Operation = serde_json::from_value(v)?;
    let done = crate::operations::wait(c, op, crate::operations::Show::Stderr)?;
    serde_json::from_value(done.result.unwrap_or_default())
        .context("vesseld's create ended without the instance")
}

fn state(
    c: &Client,
    name: &str,
    action: &str,
    timeout: Option<u32>,
    signal: Option<String>,
) -> Result<Instance> {
    c.call(
        Method::PUT,
        &path(name, "/state"),
        Some(&StateChange {
            action: action.into(),
            timeout,
            signal,
        }),
    )
}

/// `run`: create, then either start and print the id (-d), or attach, start, relay until it exits and
/// pass its exit code on.
pub fn run(g: &Global, c: &Client, detach: bool, a: &CreateArgs) -> Result<u8> {
    let inst = create(c, a)?;
    if detach {
        state(c, &inst.id, "start", None, None)?;
        out(&inst.id);
        return Ok(0);
    }
    let _ = g;
    let code = attach_and_start(c, &inst, true);
    if a.rm && code.is_err() {
        let _: Result<Value> = c.call(Method::DELETE, &path(&inst.id, "?force=true"), NO_BODY);
    }
    code
}

fn attach_and_start(c: &Client, inst: &Instance, start: bool) -> Result<u8> {
    let code = c.block_on(async {
        // Attach first: vesseld connects this session to the supervisor before the process runs, so no
        // output is lost.
        let size = match crate::session::window_size() {
            Some((r, c)) if inst.config.tty => format!("?rows={r}&cols={c}"),
            _ => String::new(),
        };
        let conn = c
            .upgrade(&path(&inst.id, &format!("/attach{size}")), None)
            .await?;
        if start {
            let change = StateChange {
                action: "start".into(),
                timeout: None,
                signal: None,
            };
            let _: Instance = c
                .call_async(Method::PUT, &path(&inst.id, "/state"), Some(&change))
                .await?;
        }
        crate::session::relay(conn, inst.config.stdin, inst.config.tty).await
    });
    // The exit as vesseld recorded it (the frame can come before the record): what `ps` shows next.
    let from_frame = code?;
    let code = wait_one(c, &inst.id).ok().flatten().or(from_frame);
    Ok(code.map_or(125, |c| c.clamp(0, 255) as u8))
}

fn wait_one(c: &Client, name: &str) -> Result<Option<i32>> {
    let w: WaitResult = c.call(Method::POST, &path(name, "/wait"), NO_BODY)?;
    Ok(w.exit_code)
}

pub fn start(c: &Client, attach: bool, names: &[String]) -> Result<u8> {
    if attach {
        if names.len() != 1 {
            return Err(anyhow!("start --attach takes one instance"));
        }
        let inst: Instance = c.call(Method::GET, &path(&names[0], ""), NO_BODY)?;
        return attach_and_start(c, &inst, true);
    }
    each(names, |n| {
        state(c, n, "start", None, None)?;
        Ok(())
    })
}

/// Apply `f` to every name, printing each name done; the first error is reported after trying them all.
pub fn each(names: &[String], mut f: impl FnMut(&str) -> Result<()>) -> Result<u8> {
    let mut failed = 0;
    for n in names {
        match f(n) {
            Ok(()) => out(n),
            Err(e) => {
                eprintln!("vessel: {}: {}", n, vessel_runtime::logging::one_line(e.as_ref()));
                failed += 1;
            }
        }
    }
    Ok(u8::from(failed > 0))
}

pub fn simple(
    c: &Client,
    action: &str,
    time: Option<u32>,
    signal: Option<String>,
    names: &[String],
) -> Result<u8> {
    each(names, |n| {
        state(c, n, action, time, signal.clone())?;
        Ok(())
    })
}

pub fn rm(c: &Client, force: bool, names: &[String]) -> Result<u8> {
    each(names, |n| {
        let p = path(n, if force { "?force=true" } else { "" });
        let _: Value = c.call(Method::DELETE, &p, NO_BODY)?;
        Ok(())
    })
}

/// What `ps` and templates see of an instance: docker's field names, plus ours.
fn row(i: &Instance) -> Value {
    let command: Vec<String> = i.config.command.clone();
    json!({
        "ID": i.id, "Name": i.name, "Names": i.name, "Image": i.image, "Kind": i.kind.to_string(),
        "Status": status_text(i), "State": i.state.status.as_str(), "CreatedAt": i.created_at,
        "Command": command.join(" "), "Labels": i.config.labels, "Pid": i.state.pid,
        "ExitCode": i.state.exit_code, "RestartCount": i.state.restart_count,
    })
}

fn status_text(i: &Instance) -> String {
    let s = &i.state;
    match s.status {
        vessel_api::Status::Running => format!("Up {}", age(s.started_at.as_deref()).replace(" ago", "")),
        vessel_api::Status::Paused => "Up (paused)".into(),
        vessel_api::Status::Exited => format!(
            "Exited ({}) {}",
            s.exit_code.map_or("unknown".into(), |c| c.to_string()),
            age(s.finished_at.as_deref())
        ),
        other => other.to_string(),
    }
}

pub fn ps(g: &Global, c: &Client, all: bool, quiet: bool, filters: &[String]) -> Result<u8> {
    let fmt = Format::parse(&g.format)?;
    let mut q = format!("/1.0/instances?all={all}");
    if !filters.is_empty() {
        q.push_str(&format!("&filter={}", encode(&filters.join(";"))));
    }
    let list: Vec<Instance> = c.call(Method::GET, &q, NO_BODY)?;
    if quiet {
        for i in &list {
            out(&i.id[..12]);
        }
        return Ok(0);
    }
    print_items(&fmt, &list.iter().map(row).collect::<Vec<_>>(), || {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|i| {
                vec![
                    i.id[..12].to_string(),
                    image_column(i),
                    truncate(&i.config.command.join(" "), 24),
                    age(Some(&i.created_at)),
                    status_text(i),
                    i.name.clone(),
                ]
            })
            .collect();
        table(
            &["INSTANCE ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"],
            &rows,
        );
    })?;
    Ok(0)
}

/// What an instance runs: its image, or a raw VM's kernel file.
fn image_column(i: &Instance) -> String {
    match i.config.vm.as_ref().and_then(|v| v.kernel.as_deref()) {
        Some(k) if i.image.is_empty() => format!(
            "vm:{}",
            std::path::Path::new(k)
                .file_name()
                .map_or(k.into(), |f| f.to_string_lossy())
        ),
        _ => i.image.clone(),
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        format!("\"{s}\"")
    } else {
        format!("\"{}…\"", s.chars().take(n - 1).collect::<String>())
    }
}

/// Items as json, a template per line, or the table `human` prints.
fn print_items(fmt: &Format, items: &[Value], human: impl FnOnce()) -> Result<()> {
    match fmt {
        Format::Json => out(serde_json::to_string_pretty(items)?),
        Format::Table => human(),
        Format::Template { text, header } => {
            if *header {
                out(format::header(text));
            }
            for i in items {
                out(format::render(text, i, false)?);
            }
        }
    }
    Ok(())
}

pub fn inspect(g: &Global, c: &Client, names: &[String]) -> Result<u8> {
    let fmt = Format::parse(&g.format)?;
    let mut items = Vec::new();
    let mut failed = false;
    for n in names {
        match c.call::<Value>(Method::GET, &path(n, ""), NO_BODY) {
            Ok(v) => items.push(v),
            Err(e) => {
                eprintln!("vessel: {}", vessel_runtime::logging::one_line(e.as_ref()));
                failed = true;
            }
        }
    }
    match fmt {
        Format::Template { text, .. } => {
            for i in &items {
                out(format::render(&text, i, false)?);
            }
        }
        _ => out(serde_json::to_string_pretty(&items)?),
    }
    Ok(u8::from(failed))
}

pub fn exec(c: &Client, a: &ExecArgs) -> Result<u8> {
    let body = ExecConfig {
        command: a.command.clone(),
        env: a.env.clone(),
        user: a.user.clone(),
        workdir: a.workdir.clone(),
        tty: a.tty,
        stdin: a.interactive,
        rows: None,
        cols: None,
    };
    let body = match crate::session::window_size() {
        Some((rows, cols)) if a.tty => ExecConfig {
            rows: Some(rows),
            cols: Some(cols),
            ..body
        },
        _ => body,
    };
    let code = c.block_on(async {
        let conn = c
            .upgrade(&path(&a.instance, "/exec"), Some(serde_json::to_vec(&body)?))
            .await?;
        crate::session::relay(conn, a.interactive, a.tty).await
    })?;
    Ok(code.map_or(125, |c| c.clamp(0, 255) as u8))
}

pub fn logs(c: &Client, a: &LogsArgs) -> Result<u8> {
    let mut q = format!("?follow={}", a.follow);
    if let Some(t) = &a.tail {
        q.push_str(&format!("&tail={}", encode(t)));
    }
    if let Some(s) = &a.since {
        q.push_str(&format!("&since={}", encode(s)));
    }
    c.lines(&path(&a.instance, &format!("/logs{q}")), |line| {
        let rec: LogRecord = serde_json::from_slice(line).context("Unreadable log record from vesseld")?;
        let text = if a.timestamps {
            format!("{} {}", rec.time, rec.log)
        } else {
            rec.log
        };
        let write = |o: &mut dyn std::io::Write| o.write_all(text.as_bytes()).and_then(|_| o.flush());
        let res = if rec.stream == "stderr" {
            write(&mut std::io::stderr().lock())
        } else {
            write(&mut std::io::stdout().lock())
        };
        if res.is_err() {
            std::process::exit(0);
        }
        Ok(true)
    })?;
    Ok(0)
}

pub fn stats(g: &Global, c: &Client, no_stream: bool, names: &[String]) -> Result<u8> {
    let fmt = Format::parse(&g.format)?;
    let show = |s: &Stats| -> Result<()> {
        let v = serde_json::to_value(s)?;
        print_items(&fmt, std::slice::from_ref(&v), || {
            table(
                &[
                    "INSTANCE ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "PIDS",
                    "BLOCK I/O",
                    "NET I/O",
                ],
                &[vec![
                    s.id[..12].to_string(),
                    s.name.clone(),
                    format!("{:.2}%", s.cpu_percent),
                    format!("{} / {}", human_size(s.memory_usage), human_size(s.memory_limit)),
                    s.pids.to_string(),
                    format!("{} / {}", human_size(s.block_read), human_size(s.block_write)),
                    format!("{} / {}", human_size(s.net_rx), human_size(s.net_tx)),
                ]],
            )
        })
    };
    if no_stream || names.len() > 1 {
        for n in names {
            let s: Stats = c.call(Method::GET, &path(n, "/stats"), NO_BODY)?;
            show(&s)?;
        }
        return Ok(0);
    }
    c.lines(&path(&names[0], "/stats?stream=true"), |line| {
        let s: Stats = serde_json::from_slice(line)?;
        show(&s)?;
        Ok(true)
    })?;
    Ok(0)
}

pub fn top(c: &Client, name: &str) -> Result<u8> {
    let t: Top = c.call(Method::GET, &path(name, "/top"), NO_BODY)?;
    let titles: Vec<&str> = t.titles.iter().map(String::as_str).collect();
    table(&titles, &t.processes);
    Ok(0)
}

pub fn wait(c: &Client, names: &[String]) -> Result<u8> {
    let mut failed = false;
    for n in names {
        match wait_one(c, n) {
            Ok(code) => out(code.map_or("unknown".into(), |c| c.to_string())),
            Err(e) => {
                eprintln!("vessel: {}", vessel_runtime::logging::one_line(e.as_ref()));
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

pub fn rename(c: &Client, name: &str, new: &str) -> Result<u8> {
    let _: Instance = c.call(
        Method::POST,
        &path(name, "/rename"),
        Some(&vessel_api::Rename { name: new.into() }),
    )?;
    Ok(0)
}

pub fn update(c: &Client, a: &UpdateArgs) -> Result<u8> {
    let limits = limits_of(&a.limits)?;
    let body = InstanceUpdate {
        limits: (limits != Limits::default()).then_some(limits),
        restart: a
            .restart
            .as_deref()
            .map(RestartPolicy::parse)
            .transpose()
            .map_err(|e| anyhow!(e))?,
    };
    if body.limits.is_none() && body.restart.is_none() {
        return Err(anyhow!("update needs at least one limit or --restart"));
    }
    each(&a.instances, |n| {
        let _: Instance = c.call(Method::PATCH, &path(n, ""), Some(&body))?;
        Ok(())
    })
}

pub fn events(g: &Global, c: &Client) -> Result<u8> {
    let fmt = Format::parse(&g.format)?;
    c.lines("/1.0/events", |line| {
        let v: Value = serde_json::from_slice(line)?;
        match &fmt {
            Format::Json => out(v.to_string()),
            Format::Template { text, .. } => out(format::render(text, &v, false)?),
            Format::Table => out(format!(
                "{} instance {} {} (name={}{})",
                v["time"].as_str().unwrap_or(""),
                v["action"].as_str().unwrap_or(""),
                v["id"].as_str().unwrap_or(""),
                v["name"].as_str().unwrap_or(""),
                v["exit_code"]
                    .as_i64()
                    .map(|c| format!(", exitCode={c}"))
                    .unwrap_or_default()
            )),
        }
        Ok(true)
    })?;
    Ok(0)
}

pub fn info(g: &Global, c: &Client) -> Result<u8> {
    let i: Info = c.call(Method::GET, "/1.0", NO_BODY)?;
    if g.json() {
        out(serde_json::to_string_pretty(&i)?);
    } else {
        out(format!(
            "Name: {}\nVersion: {}\nAPI version: {}\nRoot: {}\nPid: {}\nInstances: {} ({} running)\nCgroup parent: {}",
            i.name, i.version, i.api_version, i.root, i.pid, i.instances, i.running, i.cgroup_parent
        ));
    }
    Ok(0)
}

pub fn version(g: &Global, c: &Client) -> Result<u8> {
    let client = env!("CARGO_PKG_VERSION");
    match c.call::<Info>(Method::GET, "/1.0", NO_BODY) {
        Ok(i) if g.json() => out(json!({ "client": client, "server": i.version, "api": i.api_version })),
        Ok(i) => out(format!(
            "Client: {client}\nServer: {} (API {})",
            i.version, i.api_version
        )),
        Err(e) => {
            out(format!("Client: {client}"));
            return Err(e);
        }
    }
    Ok(0)
}

/// A rate in bits per second: a number with an optional k, m or g (powers of 1000).
pub fn parse_rate(s: &str) -> Result<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("bit")
        .or_else(|| t.strip_suffix("bps"))
        .unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1_000),
        Some('m') => (&t[..t.len() - 1], 1_000_000),
        Some('g') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (t, 1),
    };
    num.parse::<f64>()
        .ok()
        .filter(|n| *n > 0.0 && n.is_finite())
        .map(|n| (n * mult as f64) as u64)
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("Invalid --net-rate {s:?}: give bits per second, e.g. 100m or 500k"))
}
