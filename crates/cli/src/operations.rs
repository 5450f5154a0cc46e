//! Waiting on vesseld's asynchronous operations (pull, push, a create that pulls) with their progress on
//! stderr, and `vessel operation ls|show|wait|cancel`. Ctrl-C while waiting cancels the operation.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{anyhow, Result};
use hyper::Method;
use vessel_api::{Operation, OperationStatus};

use crate::cli::Global;
use crate::client::{encode, Client};
use crate::output::{human_size, out, table};

const NO_BODY: Option<&()> = None;

/// One line of progress, e.g. "Pulling x: 2/3 blobs, 12.0 MiB of 30.0 MiB".
fn progress_line(op: &Operation) -> String {
    let p = &op.progress;
    let stage = if p.stage.is_empty() {
        &op.description
    } else {
        &p.stage
    };
    if p.bytes_total == 0 {
        return stage.clone();
    }
    format!(
        "{stage} [{}/{} blobs, {} of {}]",
        p.blobs_done,
        p.blobs_total,
        human_size(p.bytes_done),
        human_size(p.bytes_total)
    )
}

/// Where an operation's progress goes: a pull's is its output (stdout, as docker's), a create's is
/// commentary (stderr); `Quiet` for JSON output.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Stdout,
    Stderr,
    Quiet,
}

/// Wait until `op` ends, showing its progress (one updating line on a terminal, each new stage as a line
/// otherwise); its result on success, else the operation's own error.
pub fn wait(c: &Client, op: Operation, show: Show) -> Result<Operation> {
    let tty = match show {
        Show::Stdout => std::io::stdout().is_terminal(),
        _ => std::io::stderr().is_terminal(),
    };
    // Commentary on stderr is for a person at a terminal: a script sees one error line or nothing.
    let quiet = show == Show::Quiet || (show == Show::Stderr && !tty);
    let print = |text: &str, newline: bool| {
        let mut w: Box<dyn Write> = match show {
            Show::Stdout => Box::new(std::io::stdout().lock()),
            _ => Box::new(std::io::stderr().lock()),
        };
        let _ = if newline {
            writeln!(w, "{text}")
        } else {
            write!(w, "\r\x1b[2K{text}").and_then(|_| w.flush())
        };
    };
    let mut shown = String::new();
    let mut last_stage = String::new();
    let path = format!("/1.0/operations/{}/wait?timeout=0.5", encode(&op.id));
    let mut cancelling = false;
    if !quiet && !tty {
        print(&op.description, true);
        last_stage = op.description.clone();
    }
    let done = c.block_on(async {
        let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        loop {
            let next = tokio::select! {
                r = c.call_async::<Operation>(Method::GET, &path, NO_BODY) => r?,
                _ = interrupts.recv() => {
                    if cancelling {
                        // A second Ctrl-C: stop waiting (the operation is vesseld's to finish or cancel).
                        eprintln!("\nvessel: stopped waiting; `vessel operation show {}` tells how it ends", op.id);
                        std::process::exit(130);
                    }
                    cancelling = true;
                    let cancel: Result<Operation> = c
                        .call_async(Method::DELETE, &format!("/1.0/operations/{}", encode(&op.id)), NO_BODY)
                        .await;
                    if let Err(e) = cancel {
                        eprintln!("\nvessel: cannot cancel: {e} (Ctrl-C again to stop waiting)");
                    }
                    continue;
                }
            };
            if !quiet {
                let line = progress_line(&next);
                if tty && line != shown {
                    print(&line, false);
                    shown = line;
                } else if !tty && !next.progress.stage.is_empty() && next.progress.stage != last_stage {
                    print(&next.progress.stage, true);
                    last_stage = next.progress.stage.clone();
                }
            }
            if next.status.is_done() {
                return Ok::<Operation, anyhow::Error>(next);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })?;
    if !quiet && tty && !shown.is_empty() {
        print("", true);
    }
    // Ctrl-C ends the command again from here on (an attached `run` after a create that pulled).
    // SAFETY: the default disposition runs no code of ours.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
    match done.status {
        OperationStatus::Success => Ok(done),
        _ => Err(anyhow!(
            "{}",
            done.error
                .clone()
                .unwrap_or_else(|| format!("{} ended {}", done.description, done.status))
        )),
    }
}

pub fn list(g: &Global, c: &Client) -> Result<u8> {
    let ops: Vec<Operation> = c.call(Method::GET, "/1.0/operations", NO_BODY)?;
    if g.json() {
        out(serde_json::to_string_pretty(&ops)?);
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = ops
        .iter()
        .map(|o| {
            vec![
                o.id.clone(),
                o.kind.clone(),
                o.status.to_string(),
                o.created_at.clone(),
                o.description.clone(),
            ]
        })
        .collect();
    table(&["ID", "KIND", "STATUS", "CREATED", "DESCRIPTION"], &rows);
    Ok(0)
}

pub fn show(c: &Client, id: &str) -> Result<u8> {
    let op: Operation = c.call(Method::GET, &format!("/1.0/operations/{}", encode(id)), NO_BODY)?;
    out(serde_json::to_string_pretty(&op)?);
    Ok(0)
}

pub fn wait_id(c: &Client, id: &str) -> Result<u8> {
    let op: Operation = c.call(Method::GET, &format!("/1.0/operations/{}", encode(id)), NO_BODY)?;
    let done = wait(c, op, Show::Stderr)?;
    out(serde_json::to_string_pretty(&done)?);
    Ok(0)
}

pub fn cancel(c: &Client, id: &str) -> Result<u8> {
    let _: Operation = c.call(
        Method::DELETE,
        &format!("/1.0/operations/{}", encode(id)),
        NO_BODY,
    )?;
    out(id);
    Ok(0)
}
